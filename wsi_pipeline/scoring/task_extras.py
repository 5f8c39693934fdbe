"""What metrics.json gets per model beyond a task's own metrics, for multiclass and survival tasks.

A task object (:mod:`wsi_pipeline.mil.tasks`) defines the few metrics early stopping and the
results table use. Scoring reports more: a multiclass task's per-class precision, recall, F1
and one-vs-rest AUC with their intervals and the confusion matrix
(:mod:`~wsi_pipeline.scoring.multiclass_metrics`); a survival task's risk-group cut-off and the
Cox hazard ratio of the high-risk group (:mod:`~wsi_pipeline.scoring.survival_metrics`). The
binary set has its own module (:mod:`~wsi_pipeline.scoring.binary_intervals`); a regression
task's five metrics are all its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.multiclass_metrics import multiclass_extras
from wsi_pipeline.scoring.survival_metrics import (
    RISK_GROUPS_KEY,
    RiskCutoff,
    hazard_ratio,
    risk_cutoff,
)
from wsi_pipeline.scoring.time_auc import time_auc_intervals

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task


def risk_split(task: Task, frame: pd.DataFrame, cutoff: RiskCutoff | None = None) -> tuple[np.ndarray, dict[bool, str]] | None:
    """The two predicted groups of a table: a survival task's at ``cutoff`` when given, else the task's own."""
    if cutoff is not None and task.name == "survival":
        return cutoff.groups(frame["risk"]), cutoff.labels()
    return task.risk_groups(frame)


def task_extras(
    task: Task,
    repeats: Sequence[pd.DataFrame],
    *,
    groups: np.ndarray | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    cutoff: RiskCutoff | None = None,
    time_auc_horizons: Sequence[float] = (),
) -> dict[str, Any]:
    """The extra metrics.json entries of one model (none for binary and regression tasks here).

    Parameters
    ----------
    task
        The task scored (bound).
    repeats
        One table per repeat, rows aligned.
    groups
        The patient of each row when rows are slides (the bootstrap's unit; the Cox fit's clusters).
    n_resamples, level, seed
        Bootstrap settings.
    cutoff
        A survival task's risk cut-off fixed elsewhere (on validation rows); default the
        median risk of the scored rows.
    time_auc_horizons
        Times at which a survival task's cumulative/dynamic AUC is computed (``td_auc_<t>``,
        bootstrapped; :mod:`~wsi_pipeline.scoring.time_auc`).

    Returns
    -------
    dict
        Multiclass: ``<metric>_<class>`` entries and ``confusion``. Survival: ``hazard_ratio``
        (first repeat's rows with follow-up; Cox fit, not bootstrapped), ``risk_groups`` and
        ``td_auc_<t>`` for each horizon.
    """
    if task.name == "multiclass":
        return multiclass_extras(repeats, task.target_columns[0], task.classes, task.metric_names,  # type: ignore[attr-defined]
                                 groups=groups, n_resamples=n_resamples, level=level, seed=seed)
    if task.name != "survival":
        return {}
    time, event = task.target_columns
    first = repeats[0]
    followed = (first[time].notna() & first[event].notna()).to_numpy()
    rows = first[followed]
    cut = cutoff or risk_cutoff(rows["risk"])
    clusters = None if groups is None else np.asarray(groups)[followed]
    ratio = hazard_ratio(rows[time], rows[event], cut.groups(rows["risk"]), clusters=clusters, level=level)
    entries: dict[str, Any] = {"hazard_ratio": ratio, RISK_GROUPS_KEY: cut.as_dict()}
    if time_auc_horizons:
        entries.update(time_auc_intervals(repeats, time, event, time_auc_horizons, groups=groups, n_resamples=n_resamples,
                                          level=level, seed=seed))
    return entries
