"""The Markdown report of standalone binary scoring: inputs, every metric per model, comparisons, plots.

Metrics are rows and models columns (eleven metrics do not fit as columns), each written as
``value [low, high]`` at the run's confidence level, which the headers name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.scoring.binary import BINARY_LABELS, BINARY_METRICS, THRESHOLD_FREE
from wsi_pipeline.scoring.formatting import format_interval, format_p, format_value
from wsi_pipeline.scoring.layout import PLOTS_DIR, REPORT_FILE, ROC_PLOT

if TYPE_CHECKING:
    from wsi_pipeline.scoring.inputs import ScoringInputs
    from wsi_pipeline.scoring.standalone import ScoringSettings
    from wsi_pipeline.scoring.threshold import Threshold


def ci_text(level: float) -> str:
    """How a confidence level is written in headers: ``95% CI``, ``80% CI``, ``97.5% CI``."""
    return f"{level * 100:g}% CI"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _metric_table(metrics: Mapping[str, Mapping[str, Any]], level: float) -> list[str]:
    models = list(metrics)
    lines = [f"| Metric [{ci_text(level)}] | " + " | ".join(_cell(m) for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for name in BINARY_METRICS:
        marker = "" if name in THRESHOLD_FREE else " *"
        lines.append(f"| {BINARY_LABELS[name]}{marker} | " + " | ".join(format_interval(metrics[m][name]) for m in models) + " |")
    lines.append("| AUC permutation p (one-sided) | " + " | ".join(format_p(metrics[m]["auc_permutation_p"]) for m in models) + " |")
    counts = []
    for m in models:
        slides = f"{metrics[m]['n_slides']} slides of " if "n_slides" in metrics[m] else ""
        counts.append(f"{slides}{metrics[m]['n_patients']} patients, {metrics[m]['n_positive']} positive")
    lines.append("| Scored | " + " | ".join(counts) + " |")
    return lines


def _comparison_table(comparisons: Sequence[Mapping[str, Any]], level: float) -> list[str]:
    if not comparisons:
        return ["One model only: nothing to compare.", ""]
    header = (f"| Model | Reference | Patients | AUC difference [{ci_text(level)}, paired bootstrap] | Bootstrap p | "
              f"DeLong z | DeLong p | DeLong {ci_text(level)} |")
    lines = [header,
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        delong = c["delong"] or {}
        interval = f"[{format_value(delong.get('ci_low'))}, {format_value(delong.get('ci_high'))}]" if delong else "n/a"
        lines.append(
            f"| {_cell(c['model'])} | {_cell(c['reference'])} | {c['n_patients']} | {format_interval(c['auc_difference'])} | "
            f"{format_p(c['auc_difference']['p_value'])} | {format_value(delong.get('z'), 2)} | {format_p(delong.get('p_value'))} | "
            f"{interval} |"
        )
    return lines


def write_binary_report(
    out_dir: Path,
    *,
    inputs: ScoringInputs,
    metrics: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Threshold],
    settings: ScoringSettings,
    notes: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/report.md`` for a standalone binary scoring.

    Parameters
    ----------
    out_dir
        Output folder; the plots are in ``out_dir/plots``.
    inputs
        The scored inputs (file names, task, grouping).
    metrics
        Per model, its metrics.json entry.
    comparisons
        The comparison entries of metrics.json.
    thresholds
        The decision threshold of each model.
    settings
        The scoring settings (bootstrap, level, permutations, bins).
    notes
        Warnings listed at the end.

    Returns
    -------
    Path
        The report (written atomically).
    """
    level = settings.ci_level
    unit = "patients (each drawn with all their rows)" if inputs.grouped else "patients"
    lines = [f"# Scoring of {inputs.predictions_path.name}", "", "## Inputs", "",
             f"- **predictions**: {_cell(inputs.predictions_path)}", f"- **truth**: {_cell(inputs.truth_path)}",
             f"- **task**: binary, label column '{_cell(inputs.task.target_columns[0])}' (1 = positive, 0 = negative)", f"- **models**: {_cell(', '.join(inputs.models))}",
             f"- **validation rows** (threshold only, not scored): {len(inputs.validation)}", ""]
    lines += ["## Results", ""] + _metric_table(metrics, level) + [""]
    lines.append("\\* at the decision threshold (score \u2265 threshold is predicted positive): "
                 + "; ".join(f"{_cell(m)}: {t.describe()}" for m, t in thresholds.items()) + ".")
    if settings.threshold_method == "fixed":
        lines[-1] += (" Standalone scoring had no validation predictions to choose a threshold on, so the fixed threshold is used;"
                      " a threshold tuned on the scored rows would inflate these metrics.")
    lines += ["", (
        f"{ci_text(level)}s: percentile bootstrap over {unit} ({settings.n_resamples} resamples, seed {settings.seed}); "
        "resamples on which a metric is undefined (e.g. one class) are redrawn for that metric. "
        f"Expected calibration error: {settings.n_bins} equal-width probability bins, [0, 1/{settings.n_bins}], ..., "
        "the gap between observed frequency and mean probability of each bin weighted by its share of rows. "
        f"AUC permutation p: {settings.n_permutations} shuffles of the labels among patients, one-sided (AUC > 0.5)."
    ), ""]
    lines += ["## Comparisons", ""] + _comparison_table(comparisons, level) + [""]
    if comparisons:
        lines += [("Each model against the mean-pool baseline when there is one, else every pair. Paired bootstrap: the same "
                   "patients drawn for both models; p = twice the smaller share of resampled differences on either side of 0 (counting the observed data as one resample). "
                   "DeLong's test (DeLong et al. 1988) needs one row per patient."), ""]
    lines += ["## Plots", "", f"![ROC curves]({PLOTS_DIR}/{ROC_PLOT})", "", f"![Reliability diagram]({PLOTS_DIR}/reliability.png)", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {_cell(note)}" for note in notes] + [""]
    return atomic_write_text(Path(out_dir) / REPORT_FILE, "\n".join(lines))
