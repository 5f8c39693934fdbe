"""Subgroup and site breakdowns: the task's headline metrics within each value of a column.

A model can be good overall and poor at one site (scanner, centre) or in one subgroup; a
pooled metric hides that. When the scored rows have a ``site`` column, or columns named by the
user (``scoring.subgroups`` in a workflow, ``--subgroup-column`` in standalone scoring), each
model's headline metrics are computed on the rows of every value of each column, with the same
patient bootstrap as the pooled ones (:func:`~wsi_pipeline.scoring.task_intervals.task_intervals`,
mean over repeats, patients drawn with all their slides).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.binary_intervals import interval_entry
from wsi_pipeline.scoring.task_intervals import task_intervals

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: metrics.json's key of a model's breakdowns (not a metric): ``{column: {value: {metric: entry}}}``.
SUBGROUPS_KEY = "subgroups"
#: The column broken down whenever the rows have it.
SITE_COLUMN = "site"
#: The metrics each task is broken down by.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc",),
    "multiclass": ("macro_f1", "balanced_accuracy"),
    "survival": ("c_index",),
    "regression": ("mae", "r2"),
}
#: Columns of a predictions table that can never be a subgroup.
_RESERVED = frozenset({"patient_id", "slide_id", "model", "fold", "repeat", "encoder"})


def headline_metrics(task: Task) -> tuple[str, ...]:
    """The metrics broken down for a task (its first metric for a task not listed)."""
    return HEADLINE_METRICS.get(task.name, task.metric_names[:1])


def subgroup_columns(table: pd.DataFrame, requested: Sequence[str], *, where: str, option: str) -> list[str]:
    """The columns to break down by: ``site`` when present, then the requested ones.

    Parameters
    ----------
    table
        The scored rows.
    requested
        Columns the user asked for; each must be in ``table``.
    where, option
        Named in the error (the file or run; the setting that asked for the column).

    Returns
    -------
    list of str
        Distinct column names.

    Raises
    ------
    WSIPipelineError
        If a requested column is absent or is an id column.
    """
    for name in requested:
        if name in _RESERVED:
            raise WSIPipelineError(f"'{name}' identifies rows; it cannot be a subgroup column", where=option,
                                   fix="name a column that groups patients (e.g. site, sex, stage)")
        if name not in table.columns:
            raise WSIPipelineError(
                f"subgroup column '{name}' is not among the scored table's columns ({', '.join(map(str, table.columns))})",
                where=where, fix=f"add '{name}' to the table (one value per patient), or remove it from {option}",
            )
    return list(dict.fromkeys([*([SITE_COLUMN] if SITE_COLUMN in table.columns else []), *requested]))


def subgroup_entries(
    repeats: Sequence[pd.DataFrame],
    task: Task,
    columns: Sequence[str],
    *,
    slide_level: bool = False,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each headline metric with its interval within each value of each column.

    Parameters
    ----------
    repeats
        One table per repeat (same rows in the same order): the task's target and prediction
        columns, ``patient_id`` and the subgroup columns.
    task
        The task scored.
    columns
        The subgroup columns (:func:`subgroup_columns`).
    slide_level
        Whether rows are slides (the bootstrap then draws patients with all their slides).
    n_resamples, level, seed
        Bootstrap settings (the pooled metrics').

    Returns
    -------
    dict
        ``{column: {value: {metric: {"value", "ci_low", "ci_high"}, "n_patients": int}}}``;
        values in sorted order, rows without a value left out.
    """
    names = list(headline_metrics(task))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for column in columns:
        values = repeats[0][column]
        present = values.notna().to_numpy()
        keys = values.astype(str).to_numpy()
        out[column] = {}
        for value in sorted(set(keys[present])):
            rows = present & (keys == value)
            subset = [r[rows].reset_index(drop=True) for r in repeats]
            patients = repeats[0]["patient_id"].to_numpy()[rows]
            intervals = task_intervals(task, subset, names, groups=patients if slide_level else None, n_resamples=n_resamples,
                                       level=level, seed=seed)
            entry: dict[str, Any] = {name: interval_entry(*intervals[name]) for name in names}
            entry["n_patients"] = len(np.unique(patients.astype(str)))
            if slide_level:
                entry["n_slides"] = int(rows.sum())
            out[column][value] = entry
    return out
