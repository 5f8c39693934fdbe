"""The regression metric set, computed for many bootstrap resamples at once.

As in :mod:`wsi_pipeline.scoring.binary`, rows come once with a weight matrix of shape
(resamples, rows) (:mod:`wsi_pipeline.scoring.resample`); with integer weights each value
equals scikit-learn's or SciPy's on the rows repeated that many times (the tests check it).
Spearman's rho is Pearson's r of average ranks; a row drawn ``w`` times holds ``w`` tied
ranks, so the rank of a value is the weight below it plus half its own tied weight, plus 1/2.

Metrics: ``mae``, ``rmse``, ``r2`` (NaN when the targets do not vary), ``pearson`` and
``spearman`` (NaN when the targets or the predictions do not vary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.bootstrap import Interval
from wsi_pipeline.scoring.resample import bootstrap_weighted

#: The regression metrics of metrics.json, in report order.
REGRESSION_METRICS: tuple[str, ...] = ("mae", "rmse", "r2", "pearson", "spearman")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _ties(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order of ``x``, the start of each run of equal values in that order, and each row's run."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run = np.empty(x.size, dtype=np.int64)
    run[order] = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1
    return order, starts, run


def _varies(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Whether each resample holds at least two distinct values of ``x`` (exactly, not up to rounding)."""
    order, starts, _ = _ties(x)
    return (np.add.reduceat(w[:, order], starts, axis=1) > 0).sum(axis=1) >= 2


def _average_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, rows): the average rank of each row's value when row ``i`` appears ``w[b, i]`` times."""
    order, starts, run = _ties(x)
    tied = np.add.reduceat(w[:, order], starts, axis=1)  # weight of each run of equal values
    below = np.cumsum(tied, axis=1) - tied
    return (below + (tied + 1.0) / 2.0)[:, run]


def _pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation per resample; ``x`` and ``y`` are (rows,) or (B, rows)."""
    mx = _ratio((w * x).sum(axis=1), total)[:, None]
    my = _ratio((w * y).sum(axis=1), total)[:, None]
    dx, dy = x - mx, y - my
    cov = (w * dx * dy).sum(axis=1)
    scale = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    return np.clip(_ratio(cov, scale), -1.0, 1.0)


def regression_metric_arrays(target: ArrayLike, prediction: ArrayLike, weights: ArrayLike | None = None) -> dict[str, np.ndarray]:
    """Every regression metric (see the module docstring) of each resample.

    Parameters
    ----------
    target
        True value per row.
    prediction
        Predicted value per row.
    weights
        (B, rows) counts; default one resample of weight 1.

    Returns
    -------
    dict
        Name (:data:`REGRESSION_METRICS`) -> values, shape (B,), NaN where undefined.
    """
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    p = np.asarray(prediction, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"target and prediction must have equal length, got {y.shape} and {p.shape}")
    w = np.ones((1, y.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    total = w.sum(axis=1)
    error = p - y
    squared = _ratio((w * error**2).sum(axis=1), total)
    mean_y = _ratio((w * y).sum(axis=1), total)[:, None]
    spread = _ratio((w * (y - mean_y) ** 2).sum(axis=1), total)
    y_varies = _varies(y, w)
    both_vary = y_varies & _varies(p, w)
    return {
        "mae": _ratio((w * np.abs(error)).sum(axis=1), total),
        "rmse": np.sqrt(squared),
        "r2": np.where(y_varies, 1.0 - _ratio(squared, spread), np.nan),
        "pearson": np.where(both_vary, _pearson(y, p, w, total), np.nan),
        "spearman": np.where(both_vary, _pearson(_average_ranks(y, w), _average_ranks(p, w), w, total), np.nan),
    }


def regression_intervals(
    target: ArrayLike,
    predictions: Sequence[ArrayLike],
    *,
    names: Sequence[str] = REGRESSION_METRICS,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[Interval, list[float]]]:
    """Patient-bootstrap intervals of regression metrics, each the mean over repeats.

    Parameters
    ----------
    target
        True value per row (the same in every repeat).
    predictions
        One array of predictions per repeat, rows aligned with ``target``.
    names
        The metrics wanted.
    groups
        Patient of each row (the resampling unit); default one row per patient.
    n_resamples, level, seed
        Bootstrap settings (the same draws as every other interval of the stage).

    Returns
    -------
    dict
        Metric name -> (interval of the mean over repeats, the metric on each repeat).
    """
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    repeats = [np.asarray(p, dtype=np.float64).reshape(-1) for p in predictions]
    if not repeats:
        raise ValueError("regression_intervals needs at least one repeat")

    def mean_over_repeats(weights: np.ndarray) -> dict[str, np.ndarray]:
        values = [regression_metric_arrays(y, p, weights) for p in repeats]
        return {name: np.mean([v[name] for v in values], axis=0) for name in names}

    draws = bootstrap_weighted(mean_over_repeats, y.size, groups=groups, n_resamples=n_resamples, seed=seed)
    per_repeat = [regression_metric_arrays(y, p) for p in repeats]
    return {name: (draws.interval(name, level), [float(v[name][0]) for v in per_repeat]) for name in names}
