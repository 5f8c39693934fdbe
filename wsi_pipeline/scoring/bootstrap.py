"""Patient-level bootstrap confidence intervals.

Rows are patients: we resample patients with replacement, recompute the metric on each
resample, and take the percentile interval. Resampling slides or tiles instead would treat
correlated observations as independent and give falsely narrow intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.metrics import metric_function

# Redraw budget: at most this many draws per requested resample. Reached only when one
# class is very rare (e.g. 1 positive in 100 patients); then fewer resamples are used and
# ``n_resamples_used`` says so rather than looping for ever.
_MAX_DRAWS_PER_RESAMPLE = 20


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval.

    Attributes
    ----------
    value
        The metric on all patients (``nan`` if undefined).
    ci_low, ci_high
        Percentile interval bounds (``nan`` if no resample was usable).
    n_resamples_used
        Resamples on which the metric was defined and that entered the percentiles.
    n_undefined
        Resamples drawn but discarded (and redrawn) because the metric was undefined on them.
    level
        Confidence level, e.g. 0.95.
    """

    value: float
    ci_low: float
    ci_high: float
    n_resamples_used: int
    n_undefined: int = 0
    level: float = 0.95

    def as_dict(self) -> dict[str, float | None]:
        """Return ``{"value", "ci_low", "ci_high"}`` as JSON-safe numbers.

        Returns
        -------
        dict
            Plain Python floats; an undefined (``nan``) entry becomes ``None`` so that the
            dict can be written as strict JSON (``null``).
        """
        return {key: _json_float(getattr(self, key)) for key in ("value", "ci_low", "ci_high")}


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def bootstrap_ci(
    labels: ArrayLike,
    scores: ArrayLike,
    metric: str | Callable[[np.ndarray, np.ndarray], float],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap confidence interval of a metric, resampling patients.

    Parameters
    ----------
    labels
        True labels, one per patient (row).
    scores
        Predicted probability of class 1, one per patient.
    metric
        A metric name from :data:`wsi_pipeline.scoring.metrics.METRIC_NAMES` (threshold 0.5),
        or a function ``f(labels, scores) -> float`` that returns ``nan`` (or raises
        ``ValueError``) where the metric is undefined.
    n_resamples
        Number of usable resamples wanted.
    level
        Confidence level in (0, 1).
    seed
        Seed of the ``numpy.random.Generator``; the same seed gives the same interval.

    Returns
    -------
    Interval
        Point estimate on all patients and the percentile interval. Resamples on which the
        metric is undefined (e.g. a single class, for AUC) are redrawn and counted in
        ``n_undefined``; after ``20 * n_resamples`` draws the interval uses what it has.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    fn = metric_function(metric) if isinstance(metric, str) else metric
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")

    value = _safe(fn, y, s)
    n = y.size
    if n == 0 or not math.isfinite(value):
        # Undefined on the full data means undefined on every resample: don't burn draws.
        return Interval(value, math.nan, math.nan, 0, 0, level)

    rng = np.random.default_rng(seed)
    stats: list[float] = []
    n_undefined = 0
    max_draws = _MAX_DRAWS_PER_RESAMPLE * n_resamples
    draws = 0
    while len(stats) < n_resamples and draws < max_draws:
        # Draw in blocks (one row of indices per resample) for speed; the block sequence is
        # a pure function of the seed, so redraws stay reproducible.
        block = min(n_resamples - len(stats), max_draws - draws)
        idx = rng.integers(0, n, size=(block, n))
        draws += block
        for row in idx:
            v = _safe(fn, y[row], s[row])
            if math.isfinite(v):
                stats.append(v)
            else:
                n_undefined += 1

    if not stats:
        return Interval(value, math.nan, math.nan, 0, n_undefined, level)
    alpha = 1.0 - level
    low, high = np.quantile(np.asarray(stats), [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(value, float(low), float(high), len(stats), n_undefined, level)


def _safe(fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, s: np.ndarray) -> float:
    # A user-supplied metric may signal "undefined" by raising ValueError (scikit-learn's
    # convention) instead of returning nan; treat both the same.
    try:
        return float(fn(y, s))
    except ValueError:
        return math.nan
