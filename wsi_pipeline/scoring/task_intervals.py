"""A task's metrics with patient-bootstrap intervals, by the fastest route that gives the same numbers.

:func:`~wsi_pipeline.scoring.bootstrap.bootstrap_task_metrics` calls the task's ``metrics`` once
per resample: for a multiclass task that is four scikit-learn calls of ~10 ms each, so 1,000
resamples take half a minute per model, and as long again per subgroup. Binary, multiclass and
regression metrics also exist as weighted sums over all resamples at once
(:mod:`~wsi_pipeline.scoring.binary_intervals`, :mod:`~wsi_pipeline.scoring.multiclass_metrics`,
:mod:`~wsi_pipeline.scoring.regression_metrics`), drawn with the same seed and redraw rule, so
they give the same intervals (the tests compare them); a survival task's C-index goes through
the task's own metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.binary import BINARY_METRICS
from wsi_pipeline.scoring.binary_intervals import binary_intervals
from wsi_pipeline.scoring.bootstrap import Interval, bootstrap_task_metrics
from wsi_pipeline.scoring.calibration import DEFAULT_BINS
from wsi_pipeline.scoring.multiclass_metrics import (
    class_indices,
    metric_names,
    multiclass_intervals,
)
from wsi_pipeline.scoring.regression_metrics import (
    REGRESSION_METRICS,
    regression_intervals,
)

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task


def task_intervals(
    task: Task,
    repeats: Sequence[pd.DataFrame],
    names: Sequence[str],
    *,
    groups: np.ndarray | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, tuple[Interval, list[float]]]:
    """Each of ``names`` (metrics of ``task.metrics``) with its interval of the mean over repeats.

    Parameters
    ----------
    task
        The task (bound).
    repeats
        One table per repeat (the task's target and prediction columns), rows aligned.
    names
        The metrics wanted.
    groups
        The patient of each row when rows are slides.
    n_resamples, level, seed
        Bootstrap settings.
    n_bins
        Probability bins of a binary task's expected calibration error.

    Returns
    -------
    dict
        Metric name -> (interval, value on each repeat), as :func:`bootstrap_task_metrics` returns.
    """
    if task.name == "multiclass" and set(names) <= set(metric_names(task.classes)):  # type: ignore[attr-defined]
        classes = task.classes  # type: ignore[attr-defined]
        label = task.target_columns[0]
        return multiclass_intervals(
            class_indices(repeats[0][label], classes), [class_indices(r["predicted"], classes) for r in repeats],
            [np.column_stack([r[f"prob_{c}"].to_numpy(dtype=np.float64) for c in classes]) for r in repeats], classes,
            names=names, groups=groups, n_resamples=n_resamples, level=level, seed=seed,
        )
    if task.name == "binary" and set(names) <= set(BINARY_METRICS):
        label = task.target_columns[0]
        return binary_intervals(repeats[0][label].to_numpy(dtype=np.float64), [r["score"].to_numpy(dtype=np.float64) for r in repeats],
                                task.config.threshold, names=names, groups=groups, n_resamples=n_resamples, level=level, seed=seed,
                                n_bins=n_bins)
    if task.name == "regression" and set(names) <= set(REGRESSION_METRICS):
        return regression_intervals(repeats[0][task.target_columns[0]].to_numpy(dtype=np.float64),
                                    [r["prediction"].to_numpy(dtype=np.float64) for r in repeats], names=names, groups=groups,
                                    n_resamples=n_resamples, level=level, seed=seed)
    columns = [*task.target_columns, *task.prediction_columns]
    tables = [{c: r[c].to_numpy() for c in columns} for r in repeats]
    return bootstrap_task_metrics(tables, task.metrics, names, n_resamples=n_resamples, level=level, seed=seed, groups=groups)
