"""Patient-bootstrap intervals of every binary metric, averaged over the repeats of a cross-validation.

The run's score stage and standalone scoring share this. Each repeat is one table of the same
rows in the same order (one repeat's out-of-fold predictions). A resample draws patients once
(:mod:`wsi_pipeline.scoring.resample`) and applies the same weights to every repeat; its
statistic is the mean over repeats of the metric, so the point estimate is the mean over
repeats and the interval is that mean's percentile interval under resampling patients --
what :func:`~wsi_pipeline.scoring.bootstrap.bootstrap_task_metrics` does for any task, here
for all eleven metrics at once as weighted sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.binary import BINARY_METRICS, binary_metric_arrays
from wsi_pipeline.scoring.bootstrap import Interval
from wsi_pipeline.scoring.calibration import DEFAULT_BINS
from wsi_pipeline.scoring.resample import bootstrap_weighted


def binary_intervals(
    labels: ArrayLike,
    scores: Sequence[ArrayLike],
    threshold: float,
    *,
    names: Sequence[str] = BINARY_METRICS,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, tuple[Interval, list[float]]]:
    """Bootstrap intervals of binary metrics, the metric averaged over repeats.

    Parameters
    ----------
    labels
        0/1 per row (the same in every repeat).
    scores
        One array of scores per repeat, rows aligned with ``labels``.
    threshold
        Scores at or above it are predicted positive.
    names
        The metrics wanted (of :data:`~wsi_pipeline.scoring.binary.BINARY_METRICS`).
    groups
        Patient of each row (the resampling unit); default one row per patient.
    n_resamples, level, seed
        Bootstrap settings.
    n_bins
        Bins of the expected calibration error.

    Returns
    -------
    dict
        Metric name -> (interval of the mean over repeats, the metric on each repeat).
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    repeats = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    if not repeats or any(s.shape != y.shape for s in repeats):
        raise ValueError("binary_intervals needs one score array per repeat, each as long as labels")

    def mean_over_repeats(weights: np.ndarray) -> dict[str, np.ndarray]:
        values = [binary_metric_arrays(y, s, threshold, weights, n_bins=n_bins) for s in repeats]
        # A resample undefined in one repeat is undefined as a mean (NaN propagates), and is redrawn.
        return {name: np.mean([v[name] for v in values], axis=0) for name in names}

    draws = bootstrap_weighted(mean_over_repeats, y.size, groups=groups, n_resamples=n_resamples, seed=seed)
    per_repeat = [binary_metric_arrays(y, s, threshold, n_bins=n_bins) for s in repeats]
    return {name: (draws.interval(name, level), [float(v[name][0]) for v in per_repeat]) for name in names}


def interval_entry(interval: Interval, per_repeat: list[float]) -> dict[str, Any]:
    """A metric's metrics.json entry: ``{"value", "ci_low", "ci_high"}`` (+ ``per_repeat`` with several repeats)."""
    entry: dict[str, Any] = interval.as_dict()
    if len(per_repeat) > 1:
        entry["per_repeat"] = [v if np.isfinite(v) else None for v in per_repeat]
    return entry


def binary_extras(
    repeats: Sequence[Any],
    label_column: str,
    threshold: float,
    skip: Sequence[str],
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """metrics.json entries of the binary metrics a task does not report itself (the run's score stage).

    Parameters
    ----------
    repeats
        One table per repeat (data frames with ``label_column`` and ``score``), rows aligned.
    label_column
        The label column.
    threshold
        The task's decision threshold.
    skip
        Metrics already computed (the task's own).
    groups, n_resamples, level, seed
        As for :func:`binary_intervals`.

    Returns
    -------
    dict
        Metric name -> entry (:func:`interval_entry`), in the order of ``BINARY_METRICS``.
    """
    names = [name for name in BINARY_METRICS if name not in skip]
    labels = np.asarray(repeats[0][label_column], dtype=np.float64)
    intervals = binary_intervals(labels, [np.asarray(r["score"], dtype=np.float64) for r in repeats], threshold, names=names,
                                 groups=groups, n_resamples=n_resamples, level=level, seed=seed)
    return {name: interval_entry(*intervals[name]) for name in names}
