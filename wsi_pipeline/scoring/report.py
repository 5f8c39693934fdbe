"""The Markdown report: one table comparing models, the plots, and the run's context."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.scoring.cohort_summary import cohort_lines
from wsi_pipeline.scoring.formatting import format_interval, format_p
from wsi_pipeline.scoring.layout import (
    PLOTS_DIR,
    PR_PLOT,
    RELIABILITY_PLOT,
    REPORT_FILE,
    TASK_PLOTS,
    TRAINING_CURVES_PLOT,
    km_plot_name,
)
from wsi_pipeline.scoring.per_fold import per_fold_table
from wsi_pipeline.scoring.predictions import (
    SLIDE_COLUMN,
    default_task,
    follow_up_columns,
)
from wsi_pipeline.scoring.run_comparisons import comparison_table
from wsi_pipeline.scoring.task_report import task_sections

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task
    from wsi_pipeline.scoring.cohort_summary import CohortSummary

#: How the report heads the task's counts (``Task.counts``).
COUNT_LABELS = {"n_positive": "Positives", "n_events": "Events", "n_per_class": "Per class"}


def _cell(text: object) -> str:
    # A '|' inside a cell would split it; a newline would end the table row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _count(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def evaluation_unit(predictions: pd.DataFrame) -> str:
    """What a row is scored as: ``"slide-level: N slides of M patients"`` or ``"patient-level: M patients"``.

    Counted in the first repeat (every repeat holds the same rows), over all models.
    """
    rows = predictions
    if "repeat" in rows and len(rows):
        rows = rows[rows["repeat"] == rows["repeat"].min()]
    n_patients = rows["patient_id"].nunique()
    if SLIDE_COLUMN not in rows:
        return f"patient-level: {n_patients} patients"
    n_slides = len(rows[["patient_id", SLIDE_COLUMN]].drop_duplicates())
    return f"slide-level: {n_slides} slides of {n_patients} patients"


def ci_text(level: float) -> str:
    """How a confidence level is written in headers: ``95% CI``, ``80% CI``, ``97.5% CI``."""
    return f"{level * 100:g}% CI"


def _results_table(metrics: Mapping[str, Mapping[str, Any]], predictions: pd.DataFrame, task: Task, level: float = 0.95) -> list[str]:
    survival = any("logrank_p" in m for m in metrics.values())
    repeats = any("n_repeats" in m for m in metrics.values())
    slides = any("n_slides" in m for m in metrics.values())
    names = [name for name in task.metric_names if any(name in m for m in metrics.values())]
    counts = [key for key in COUNT_LABELS if any(key in m for m in metrics.values())]
    header = ["Model", *(f"{task.metric_labels.get(n, n)} [{ci_text(level)}]" for n in names), *(["Slides"] if slides else []),
              "Patients", *(COUNT_LABELS[k] for k in counts), "Folds"]
    if repeats:
        header.append("Repeats")
    if survival:
        header.append("Log-rank p (predicted groups)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    folds = predictions.groupby("model")["fold"].nunique() if "fold" in predictions else pd.Series(dtype=int)
    for model, m in metrics.items():
        row = [
            _cell(model),
            *(format_interval(m[n]) if n in m else "n/a" for n in names),
            *([str(m.get("n_slides", "?"))] if slides else []),
            str(m["n_patients"]),
            *(_cell(_count(m[k])) if k in m else "?" for k in counts),
            str(int(folds[model])) if model in folds.index else "?",
        ]
        if repeats:
            row.append(str(m.get("n_repeats", 1)))
        if survival:
            row.append(format_p(m["logrank_p"]["value"]) if "logrank_p" in m else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _method_lines(settings: Mapping[str, Any] | None, survival: bool, task: Task, by_slide: bool = False) -> list[str]:
    metric_list = ", ".join(task.metric_labels.get(n, n) for n in task.metric_names)
    lines = [f"Task: {task.describe()}. Metrics: {metric_list} of the pooled out-of-fold predictions"
             + (", one per slide (each slide scored against its patient's target)." if by_slide else ".")]
    # Slide rows of one patient are correlated: the bootstrap draws patients, each with all their slides.
    clusters = (" A resample draws patients, each with all their slides: a patient's slides never count as independent."
                if by_slide else "")
    if not settings:
        return [*lines, f"95% confidence intervals: percentile bootstrap over patients.{clusters}"]
    text = (
        f"{settings.get('ci_level', 0.95) * 100:g}% confidence intervals: percentile bootstrap over patients "
        f"({settings.get('n_resamples', '?')} resamples, seed {settings.get('seed', '?')}); "
        f"resamples on which a metric is undefined (e.g. a single class) are redrawn for that metric."
    )
    if settings.get("threshold") is not None:
        text += (f" Accuracy and balanced accuracy use the threshold score \u2265 {settings['threshold']}; average precision,"
                 " F1, sensitivity, specificity, PPV, NPV, Brier score and expected calibration error (10 equal-width"
                 " bins), bootstrapped alike, are in metrics.json.")
    text += clusters
    n_repeats = int(settings.get("n_repeats") or 1)
    if n_repeats > 1:
        text += (f" The cross-validation was repeated {n_repeats} times: each value is the mean over repeats, its interval"
                 " the patient bootstrap of that mean (one draw of patients applied to every repeat); per-repeat values"
                 " are in metrics.json. Plots show the first repeat; the log-rank p is the median over repeats.")
    if survival:
        text += (" The log-rank test compares the two predicted groups of the Kaplan-Meier plots, among "
                 + ("slides with follow-up (as if independent)." if by_slide else "patients with follow-up."))
    return [*lines, text]


def write_report(
    metrics: Mapping[str, Mapping[str, Any]],
    predictions: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    context: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    task: Task | None = None,
    banners: Sequence[str] = (),
    cohort: CohortSummary | None = None,
    protocol: Mapping[str, str] | None = None,
    comparisons: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``out_dir/report.md``: the task, the model comparison, links to the plots, the context.

    Parameters
    ----------
    metrics
        Per model, the metrics written to metrics.json (see ``score_predictions``).
    predictions
        The validated predictions table (used for the number of folds per model).
    out_dir
        Run's scoring folder; plots are looked up in ``out_dir/plots``.
    title
        Report title (first heading).
    context
        Key/value facts about the run (dataset, encoder, run id, ...), printed verbatim as a
        list, in the given order -- e.g. an encoder marked as a demo appears as such.
    settings
        Optional ``{"n_resamples", "seed", "threshold", "n_repeats", "ci_level"}`` used, described under the table.
    notes
        Optional warnings to list at the end (e.g. models scored on different patients).
    task
        The task scored (default: binary); its type, metrics and plots are named.
    banners
        Markdown lines the report opens with (:func:`~wsi_pipeline.scoring.banners.banner_lines`).
    cohort
        The run's cohort facts: a Cohort section (given, scored, left out and why).
    protocol
        Name -> sentence of the validation protocol: a Protocol section.
    comparisons
        The models' paired tests (:func:`~wsi_pipeline.scoring.run_comparisons.run_comparisons`),
        tabled beside the results.

    Returns
    -------
    Path
        The report file (written atomically).
    """
    task = task or default_task()
    out = Path(out_dir)
    plots = out / PLOTS_DIR
    columns = follow_up_columns(predictions, task)
    survival = columns is not None
    lines = [f"# {title}", "", *banners]

    lines += ["## Run", ""]
    if context:
        lines += [f"- **{_cell(key)}**: {_cell(value)}" for key, value in context.items()]
    else:
        lines.append("- (no context given)")
    lines.append(f"- **task**: {_cell(task.describe())}")
    lines.append(f"- **evaluation**: {_cell(evaluation_unit(predictions))}")
    lines.append("")
    if cohort is not None:
        lines += cohort_lines(cohort, predictions)
    if protocol:
        lines += ["## Protocol", ""] + [f"- **{_cell(key)}**: {_cell(value)}" for key, value in protocol.items()] + [""]

    lines += ["## Results", ""]
    if metrics:
        lines += _results_table(metrics, predictions, task, (settings or {}).get("ci_level", 0.95))
    else:
        lines.append("No model was scored.")
    lines += [""] + _method_lines(settings, survival, task, SLIDE_COLUMN in predictions) + [""]
    headline = task.metric_names[0]
    lines += comparison_table(comparisons or [], task.metric_labels.get(headline, headline), ci_text((settings or {}).get("ci_level", 0.95)),
                              metrics)
    lines += per_fold_table(metrics, headline, task.metric_labels.get(headline, headline))
    lines += task_sections(metrics, task, out, ci_text((settings or {}).get("ci_level", 0.95)))

    lines += ["## Plots", ""]
    lines += _task_plot_lines(task, plots)
    if task.name == "binary" and (plots / PR_PLOT).is_file():
        lines += [f"![Precision-recall curves, average precision in the legend]({PLOTS_DIR}/{PR_PLOT})", ""]
    if task.name == "binary" and (plots / RELIABILITY_PLOT).is_file():
        lines += [f"![Reliability diagram, expected calibration error in the legend]({PLOTS_DIR}/{RELIABILITY_PLOT})", ""]
    lines += _training_lines(out)
    # Link survival plots only when this table has follow-up columns, so a plot left over
    # from an earlier run with other inputs is never presented as belonging to this one.
    if survival:
        for model in metrics:
            name = km_plot_name(model)
            if (plots / name).is_file():
                rows = predictions.loc[predictions["model"] == model]
                if "repeat" in rows:
                    rows = rows[rows["repeat"] == rows["repeat"].min()]
                n_followup = int(rows.dropna(subset=list(columns)).shape[0])
                unit = "slides" if SLIDE_COLUMN in rows else "patients"
                lines += [
                    f"### Kaplan\u2013Meier: {_cell(model)} ({n_followup} {unit} with follow-up)",
                    "",
                    f"![Kaplan-Meier curves for {_cell(model)}]({PLOTS_DIR}/{name})",
                    "",
                ]

    if notes:
        lines += ["## Notes", ""] + [f"- {_cell(note)}" for note in notes] + [""]
    return atomic_write_text(out / REPORT_FILE, "\n".join(lines))


def _training_lines(out: Path) -> list[str]:
    """The report's lines on the train stage's record (curves, training.csv, checkpoints), when the run folder has them."""
    if not (out / PLOTS_DIR / TRAINING_CURVES_PLOT).is_file():
        return []  # a predictions file scored on its own: no training to show
    return [
        "### Training curves",
        "",
        f"![Training (dashed) and validation (solid) loss per epoch, chosen epoch marked]({PLOTS_DIR}/{TRAINING_CURVES_PLOT})",
        "",
        (
            "Per fold and model: the chosen epoch, epochs run, whether early stopping ended training, the best "
            "validation loss and score, seconds and device (and, with `model.grid`, the chosen settings and every grid "
            "point's inner score) are in `training.csv`; the model (`model.pt`, rebuilt by "
            "`wsi_pipeline.mil.checkpoint.load_fold_model`) and its full history (`history.json`) in "
            "`training/<fold>-<model>/`."
        ),
        "",
    ]


def _task_plot_lines(task: Task, plots: Path) -> list[str]:
    """The report's line for the task's figure: the picture, or why there is none."""
    if task.plot_kind is None:
        return [f"No ROC or scatter plot for a {task.name} task: its Kaplan\u2013Meier curves of predicted risk groups follow.", ""]
    name = TASK_PLOTS[task.plot_kind]
    what = {"roc": "ROC curves", "roc_ovr": "One-vs-rest ROC curves", "scatter": "Predicted against true"}[task.plot_kind]
    if (plots / name).is_file():
        return [f"![{what}]({PLOTS_DIR}/{name})", ""]
    return [f"{'ROC' if task.plot_kind.startswith('roc') else 'Scatter'} plot not available.", ""]
