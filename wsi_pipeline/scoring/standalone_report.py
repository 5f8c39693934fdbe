"""The report of standalone binary scoring: inputs, every metric per model, comparisons, plots.

Written as Markdown (``report.md``, plots linked) and as self-contained HTML (``report.html``,
plots embedded) from one :class:`~wsi_pipeline.scoring.document.Document`. Metrics are rows and
models columns (eleven metrics do not fit as columns), each written as ``value [low, high]``
at the run's confidence level, which the headers name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.scoring.binary import BINARY_LABELS, BINARY_METRICS, THRESHOLD_FREE
from wsi_pipeline.scoring.document import (
    Bullets,
    Document,
    Facts,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from wsi_pipeline.scoring.formatting import format_interval, format_p, format_value
from wsi_pipeline.scoring.layout import (
    PLOTS_DIR,
    RELIABILITY_PLOT,
    REPORT_FILE,
    ROC_PLOT,
)
from wsi_pipeline.scoring.markdown_html import HTML_REPORT_FILE
from wsi_pipeline.scoring.per_fold import PER_FOLD_KEY
from wsi_pipeline.scoring.task_report import SUBGROUP_TEXT, subgroup_table

if TYPE_CHECKING:
    from wsi_pipeline.scoring.inputs import ScoringInputs
    from wsi_pipeline.scoring.standalone import ScoringSettings
    from wsi_pipeline.scoring.threshold import Threshold




def ci_text(level: float) -> str:
    """How a confidence level is written in headers: ``95% CI``, ``80% CI``, ``97.5% CI``."""
    return f"{level * 100:g}% CI"


def _metric_table(metrics: Mapping[str, Mapping[str, Any]], level: float) -> Table:
    models = list(metrics)
    rows = []
    for name in BINARY_METRICS:
        marker = "" if name in THRESHOLD_FREE else " *"
        rows.append([f"{BINARY_LABELS[name]}{marker}", *(format_interval(metrics[m][name]) for m in models)])
    rows.append(["AUC permutation p (one-sided)", *(format_p(metrics[m]["auc_permutation_p"]) for m in models)])
    counts = []
    for m in models:
        slides = f"{metrics[m]['n_slides']} slides of " if "n_slides" in metrics[m] else ""
        counts.append(f"{slides}{metrics[m]['n_patients']} patients, {metrics[m]['n_positive']} positive")
    rows.append(["Scored", *counts])
    return Table([f"Metric [{ci_text(level)}]", *models], rows)


def _fold_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return f"{format_interval(entry['auc'])} (n={entry['n_patients']}, {entry['n_positive']} positive)"


def _comparison_table(comparisons: Sequence[Mapping[str, Any]], level: float) -> Table:
    header = ["Model", "Reference", "Patients", f"AUC difference [{ci_text(level)}, paired bootstrap]", "Bootstrap p",
              "DeLong z", "DeLong p", f"DeLong {ci_text(level)}"]
    rows = []
    for c in comparisons:
        delong = c["delong"] or {}
        interval = f"[{format_value(delong.get('ci_low'))}, {format_value(delong.get('ci_high'))}]" if delong else "n/a"
        rows.append([c["model"], c["reference"], str(c["n_patients"]), format_interval(c["auc_difference"]),
                     format_p(c["auc_difference"]["p_value"]), format_value(delong.get("z"), 2), format_p(delong.get("p_value")),
                     interval])
    return Table(header, rows)


def binary_document(
    out_dir: Path,
    *,
    inputs: ScoringInputs,
    metrics: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Threshold],
    settings: ScoringSettings,
    notes: Sequence[str] = (),
) -> Document:
    """The report of a standalone binary scoring as a document (see :func:`write_binary_report`)."""
    level = settings.ci_level
    plots = Path(out_dir) / PLOTS_DIR
    unit = "patients (each drawn with all their rows)" if inputs.grouped else "patients"
    doc = Document(f"Scoring of {inputs.predictions_path.name}")
    doc.add(Heading("Inputs"), Facts([
        ("predictions", str(inputs.predictions_path)), ("truth", str(inputs.truth_path)),
        ("task", f"binary, label column '{inputs.task.target_columns[0]}' (1 = positive, 0 = negative)"),
        ("models", ", ".join(inputs.models)),
        ("validation rows (threshold only, not scored)", str(len(inputs.validation))),
    ]))
    threshold_text = ("Metrics marked * are at the decision threshold (score \u2265 threshold is predicted positive): "
                      + "; ".join(f"{m}: {t.describe()}" for m, t in thresholds.items()) + ".")
    if settings.threshold_method == "fixed":
        threshold_text += (" Standalone scoring had no validation predictions to choose a threshold on, so the fixed threshold"
                           " is used; a threshold tuned on the scored rows would inflate these metrics.")
    method = (f"{ci_text(level)}s: percentile bootstrap over {unit} ({settings.n_resamples} resamples, seed {settings.seed}); "
              "resamples on which a metric is undefined (e.g. one class) are redrawn for that metric. "
              f"Expected calibration error: {settings.n_bins} equal-width probability bins, [0, 1/{settings.n_bins}], ..., "
              "the gap between observed frequency and mean probability of each bin weighted by its share of rows. "
              f"AUC permutation p: {settings.n_permutations} shuffles of the labels among patients, one-sided (AUC > 0.5).")
    doc.add(Heading("Results"), _metric_table(metrics, level), Paragraph(threshold_text), Paragraph(method))
    per_fold = {m: {e["fold"]: e for e in metrics[m][PER_FOLD_KEY]} for m in metrics if PER_FOLD_KEY in metrics[m]}
    if per_fold:
        folds = sorted({f for entries in per_fold.values() for f in entries})
        rows = [[str(f), *(_fold_cell(entries.get(f)) for entries in per_fold.values())] for f in folds]
        doc.add(Heading("Per fold", 3), Table(["Fold", *(f"{m}: AUC [{ci_text(level)}]" for m in per_fold)], rows),
                Paragraph("Each fold's rows scored alone, with their own patient bootstrap; every metric per fold is in "
                          "metrics.json (per_fold). The pooled values above are the headline."))
    breakdown = subgroup_table(metrics, BINARY_LABELS, ci_text(level))
    if breakdown is not None:
        doc.add(Heading("Subgroups", 3), Table(*breakdown), Paragraph(SUBGROUP_TEXT))
    doc.add(Heading("Comparisons"))
    if comparisons:
        doc.add(_comparison_table(comparisons, level), Paragraph(
            "Each model against the mean-pool baseline when there is one, else every pair. Paired bootstrap: the same "
            "patients drawn for both models; p = twice the smaller share of resampled differences on either side of 0 "
            "(counting the observed data as one resample). DeLong's test (DeLong et al. 1988) needs one row per patient."))
    else:
        doc.add(Paragraph("One model only: nothing to compare."))
    doc.add(Heading("Plots"), Image(plots / ROC_PLOT, f"{PLOTS_DIR}/{ROC_PLOT}", "ROC curves"),
            Image(plots / RELIABILITY_PLOT, f"{PLOTS_DIR}/{RELIABILITY_PLOT}", "Reliability diagram"))
    if notes:
        doc.add(Heading("Notes"), Bullets(list(notes)))
    return doc


def write_binary_report(
    out_dir: Path,
    *,
    inputs: ScoringInputs,
    metrics: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Threshold],
    settings: ScoringSettings,
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``out_dir/report.md`` and the self-contained ``out_dir/report.html`` of a standalone binary scoring.

    Parameters
    ----------
    out_dir
        Output folder; the plots are read from ``out_dir/plots`` (linked by the Markdown,
        embedded in the HTML).
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
    tuple of Path
        The Markdown and HTML reports (written atomically).
    """
    doc = binary_document(out_dir, inputs=inputs, metrics=metrics, comparisons=comparisons, thresholds=thresholds,
                          settings=settings, notes=notes)
    out = Path(out_dir)
    return atomic_write_text(out / REPORT_FILE, to_markdown(doc)), atomic_write_text(out / HTML_REPORT_FILE, to_html(doc))
