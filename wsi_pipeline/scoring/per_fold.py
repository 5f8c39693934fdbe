"""A run's metrics per cross-validation fold: the task's metrics on each (repeat, fold)'s rows alone.

The pooled out-of-fold metrics stay the headline (they use every patient, so their intervals
are the narrowest honest ones); the per-fold values show how much the folds disagree -- a
model that wins on pooled rows by one lucky fold is visible here. Each fold's value carries its
own patient-bootstrap interval, drawn the same way as the pooled one
(:func:`~wsi_pipeline.scoring.task_intervals.task_intervals`): a fold holds a fifth of the
patients, so these intervals are wide, and showing them keeps a reader from over-reading one
fold's number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.binary import BINARY_METRICS
from wsi_pipeline.scoring.calibration import DEFAULT_BINS
from wsi_pipeline.scoring.formatting import format_interval, format_value
from wsi_pipeline.scoring.predictions import REPEAT_COLUMN, SLIDE_COLUMN
from wsi_pipeline.scoring.task_intervals import task_intervals

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: A model's metrics.json key of its per-fold values.
PER_FOLD_KEY = "per_fold"


def per_fold_entries(
    rows: pd.DataFrame,
    task: Task,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
) -> list[dict[str, Any]]:
    """The task's metrics, each with its patient-bootstrap interval, on each (repeat, fold)'s rows of one model.

    Parameters
    ----------
    rows
        One model's rows of a validated predictions table (``fold`` column; ``repeat``). With a
        ``slide_id`` column the rows are slides and the bootstrap draws patients.
    task
        The task scored (bound; a binary task carries its decision threshold).
    n_resamples, level, seed
        Bootstrap settings (the run's ``scoring``), the same for every fold.
    n_bins
        Probability bins of a binary task's expected calibration error.

    Returns
    -------
    list of dict
        One ``{"repeat", "fold", "n_patients", ("n_slides",) <the task's counts>, <metric>:
        {"value", "ci_low", "ci_high"}, ...}`` per (repeat, fold), in that order. The metrics are the task's
        ``metric_names``, and for a binary task every metric of
        :data:`~wsi_pipeline.scoring.binary.BINARY_METRICS`. An undefined number (a fold of
        one class) is None.
    """
    names = list(BINARY_METRICS) if task.name == "binary" else list(task.metric_names)
    entries = []
    for (repeat, fold), part in rows.groupby([REPEAT_COLUMN, "fold"], sort=True):
        part = part.reset_index(drop=True)
        groups = part["patient_id"].to_numpy() if SLIDE_COLUMN in part else None
        intervals = task_intervals(task, [part], names, groups=groups, n_resamples=n_resamples, level=level, seed=seed,
                                   n_bins=n_bins)
        entry: dict[str, Any] = {"repeat": int(repeat), "fold": int(fold), "n_patients": int(part["patient_id"].nunique())}
        if SLIDE_COLUMN in part:
            entry["n_slides"] = len(part)
        entry.update(task.counts(part))
        entry.update({name: intervals[name][0].as_dict() for name in names})
        entries.append(entry)
    return entries


def per_fold_table(metrics: Mapping[str, Mapping[str, Any]], metric: str, metric_label: str) -> list[str]:
    """The report's table of one metric per fold: a row per model, a column per fold (mean over repeats).

    Parameters
    ----------
    metrics
        Model -> metrics.json entry (those without ``per_fold`` are left out).
    metric
        The metric shown (the task's headline).
    metric_label
        Its name in the report.

    Returns
    -------
    list of str
        A heading, a sentence and a pipe table; empty when no model has per-fold values.
    """
    models = {m: e[PER_FOLD_KEY] for m, e in metrics.items() if isinstance(e, Mapping) and e.get(PER_FOLD_KEY)}
    if not models:
        return []
    folds = sorted({row["fold"] for rows in models.values() for row in rows})
    repeats = max(len({row["repeat"] for row in rows}) for rows in models.values())
    lines = [
        "### Per fold", "",
        f"{metric_label} of each fold's out-of-fold predictions alone"
        + (f" (mean over the {repeats} repeats of each fold number; each repeat's values and intervals are in metrics.json)"
           if repeats > 1 else ", with its patient-bootstrap interval")
        + "; the pooled value above is the headline. Mean and SD are over folds.", "",
        "| Model | " + " | ".join(f"Fold {f}" for f in folds) + " | Mean ± SD |",
        "|---|" + "---|" * (len(folds) + 1),
    ]
    for model, rows in models.items():
        cells, per_fold = [], []
        for f in folds:
            entries = [row[metric] for row in rows if row["fold"] == f]
            value = _mean([e.get("value") for e in entries])
            per_fold.append(value)
            cells.append(format_interval(entries[0]) if len(entries) == 1 else format_value(value))
        finite = [v for v in per_fold if v is not None]
        summary = f"{np.mean(finite):.3f} ± {np.std(finite, ddof=1):.3f}" if len(finite) > 1 else "n/a"
        lines.append(f"| {str(model).replace('|', chr(92) + '|')} | " + " | ".join(cells) + f" | {summary} |")
    return [*lines, ""]


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite and len(finite) == len(values) else None
