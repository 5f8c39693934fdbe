"""A run's metrics per cross-validation fold: the task's metrics on each (repeat, fold)'s rows alone.

The pooled out-of-fold metrics stay the headline (they use every patient, so their intervals
are the narrowest honest ones); the per-fold values show how much the folds disagree -- a
model that wins on pooled rows by one lucky fold is visible here. No interval per fold: a fold
holds a fifth of the patients, and its bootstrap would be wide and mostly noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.formatting import format_value
from wsi_pipeline.scoring.predictions import REPEAT_COLUMN, SLIDE_COLUMN

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: A model's metrics.json key of its per-fold values.
PER_FOLD_KEY = "per_fold"


def per_fold_entries(rows: pd.DataFrame, task: Task) -> list[dict[str, Any]]:
    """The task's metrics on each (repeat, fold)'s rows of one model.

    Parameters
    ----------
    rows
        One model's rows of a validated predictions table (``fold`` column; ``repeat``).
    task
        The task scored (its ``metrics`` on a table of target and prediction columns).

    Returns
    -------
    list of dict
        One ``{"repeat", "fold", "n_patients", ("n_slides",) <metric>: value, ...}`` per
        (repeat, fold), in that order; an undefined metric (a fold of one class) is None.
    """
    columns = [*task.target_columns, *task.prediction_columns]
    entries = []
    for (repeat, fold), part in rows.groupby([REPEAT_COLUMN, "fold"], sort=True):
        values = task.metrics({c: part[c].to_numpy() for c in columns})
        entry: dict[str, Any] = {"repeat": int(repeat), "fold": int(fold), "n_patients": int(part["patient_id"].nunique())}
        if SLIDE_COLUMN in part:
            entry["n_slides"] = len(part)
        entry.update({name: _number(values.get(name)) for name in task.metric_names})
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
        + (f" (mean over the {repeats} repeats of each fold number; each repeat's values are in metrics.json)" if repeats > 1 else "")
        + "; the pooled value above is the headline. Mean and SD are over folds.", "",
        "| Model | " + " | ".join(f"Fold {f}" for f in folds) + " | Mean ± SD |",
        "|---|" + "---|" * (len(folds) + 1),
    ]
    for model, rows in models.items():
        per_fold = [_mean([row.get(metric) for row in rows if row["fold"] == f]) for f in folds]
        finite = [v for v in per_fold if v is not None]
        summary = f"{np.mean(finite):.3f} ± {np.std(finite, ddof=1):.3f}" if len(finite) > 1 else "n/a"
        lines.append(f"| {str(model).replace('|', chr(92) + '|')} | " + " | ".join(format_value(v) for v in per_fold)
                     + f" | {summary} |")
    return [*lines, ""]


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite and len(finite) == len(values) else None


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
