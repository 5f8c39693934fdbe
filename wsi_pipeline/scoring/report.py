"""The Markdown report: one table comparing models, the plots, and the run's context."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.scoring.formatting import format_interval, format_p
from wsi_pipeline.scoring.layout import PLOTS_DIR, REPORT_FILE, ROC_PLOT, km_plot_name
from wsi_pipeline.scoring.predictions import SURVIVAL_COLUMNS, has_survival


def _cell(text: object) -> str:
    # A '|' inside a cell would split it; a newline would end the table row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _results_table(metrics: Mapping[str, Mapping[str, Any]], predictions: pd.DataFrame) -> list[str]:
    survival = any("logrank_p" in m for m in metrics.values())
    header = ["Model", "AUC [95% CI]", "Accuracy [95% CI]", "Balanced accuracy [95% CI]",
              "Patients", "Positives", "Folds"]
    if survival:
        header.append("Log-rank p (predicted groups)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    folds = predictions.groupby("model")["fold"].nunique() if "fold" in predictions else pd.Series(dtype=int)
    for model, m in metrics.items():
        row = [
            _cell(model),
            format_interval(m["auc"]),
            format_interval(m["accuracy"]),
            format_interval(m["balanced_accuracy"]),
            str(m["n_patients"]),
            str(m["n_positive"]),
            str(int(folds[model])) if model in folds.index else "?",
        ]
        if survival:
            row.append(format_p(m.get("logrank_p")) if "logrank_p" in m else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _method_lines(settings: Mapping[str, Any] | None, survival: bool) -> list[str]:
    if not settings:
        return ["95% confidence intervals: percentile bootstrap over patients."]
    text = (
        f"95% confidence intervals: percentile bootstrap over patients "
        f"({settings.get('n_resamples', '?')} resamples, seed {settings.get('seed', '?')}); "
        f"resamples with a single class are redrawn for AUC and balanced accuracy. "
        f"Accuracy and balanced accuracy use the threshold score \u2265 {settings.get('threshold', '?')}."
    )
    if survival:
        text += (" The log-rank test compares predicted responders with predicted non-responders "
                 "(same threshold), among patients with follow-up.")
    return [text]


def write_report(
    metrics: Mapping[str, Mapping[str, Any]],
    predictions: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    context: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/report.md``: the model comparison, links to the plots, the context.

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
        Optional ``{"n_resamples", "seed", "threshold"}`` used, described under the table.
    notes
        Optional warnings to list at the end (e.g. models scored on different patients).

    Returns
    -------
    Path
        The report file (written atomically).
    """
    out = Path(out_dir)
    plots = out / PLOTS_DIR
    survival = has_survival(predictions)
    lines = [f"# {title}", ""]

    lines += ["## Run", ""]
    if context:
        lines += [f"- **{_cell(key)}**: {_cell(value)}" for key, value in context.items()]
    else:
        lines.append("- (no context given)")
    lines.append("")

    lines += ["## Results", ""]
    if metrics:
        lines += _results_table(metrics, predictions)
    else:
        lines.append("No model was scored.")
    lines += [""] + _method_lines(settings, survival) + [""]

    lines += ["## Plots", ""]
    if (plots / ROC_PLOT).is_file():
        lines += [f"![ROC curves]({PLOTS_DIR}/{ROC_PLOT})", ""]
    else:
        lines += ["ROC plot not available.", ""]
    # Link survival plots only when this table has survival columns, so a plot left over
    # from an earlier run with other inputs is never presented as belonging to this one.
    if survival:
        for model in metrics:
            name = km_plot_name(model)
            if (plots / name).is_file():
                n_followup = int(predictions.loc[predictions["model"] == model]
                                 .dropna(subset=list(SURVIVAL_COLUMNS)).shape[0])
                lines += [
                    f"### Kaplan\u2013Meier: {_cell(model)} ({n_followup} patients with follow-up)",
                    "",
                    f"![Kaplan-Meier curves for {_cell(model)}]({PLOTS_DIR}/{name})",
                    "",
                ]

    if notes:
        lines += ["## Notes", ""] + [f"- {_cell(note)}" for note in notes] + [""]
    return atomic_write_text(out / REPORT_FILE, "\n".join(lines))
