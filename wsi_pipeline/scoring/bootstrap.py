"""Patient-level bootstrap confidence intervals.

We resample patients with replacement, recompute the metric on each resample, and take the
percentile interval. When rows are slides (slide-level predictions), a patient's slides enter
and leave a resample together (a cluster bootstrap): resampling slides or tiles instead would
treat correlated observations as independent and give falsely narrow intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


def bootstrap_task_metrics(
    tables: Sequence[Mapping[str, np.ndarray]],
    metrics: Callable[[Mapping[str, np.ndarray]], Mapping[str, float]],
    names: Sequence[str],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence[object] | np.ndarray | None = None,
) -> dict[str, tuple[Interval, list[float]]]:
    """Patient bootstrap of a task's metrics, averaged over the repeats of a cross-validation.

    Every table holds the same patients in the same order (one repeat's out-of-fold
    predictions each). A resample draws patients with replacement, once, and applies the same
    draw to every repeat: the statistic of a resample is the mean over repeats of the metric
    on that resample. So the point estimate is the mean over repeats, and the interval is the
    percentile interval of that mean under resampling patients, the unit of the analysis.
    With one repeat this is exactly :func:`bootstrap_ci` of the metric on that table. Each
    metric is bootstrapped as :func:`bootstrap_ci` does (the same seed, draws and redraws of
    resamples on which it is undefined), so each metric's interval is the one a separate
    call would give; the task's metrics are computed once per distinct resample.

    Parameters
    ----------
    tables
        One per repeat: column name -> values, one per patient, patients aligned across tables.
    metrics
        The task's metrics of one table (``task.metrics``): name -> value, NaN when undefined.
    names
        The metrics to bootstrap, in order.
    n_resamples, level, seed
        As for :func:`bootstrap_ci`.
    groups
        The patient of each row, when rows are slides: a resample then draws patients with
        replacement and takes all the rows of each patient drawn (as often as drawn), so a
        patient's slides are never split. Default: every row is its own patient (the same
        resamples as before there were slide-level rows).

    Returns
    -------
    dict
        Metric name -> (interval of the mean over repeats, the metric on each repeat).
    """
    if not tables:
        raise ValueError("bootstrap_task_metrics needs at least one table")
    sizes = {len(next(iter(table.values()))) for table in tables}
    if len(sizes) != 1:
        raise ValueError(f"the repeats' tables differ in their number of patients: {sorted(sizes)}")
    n = sizes.pop()
    cache: dict[bytes, dict[str, float]] = {}

    def mean_over_repeats(rows: np.ndarray) -> dict[str, float]:
        key = rows.tobytes()
        if key not in cache:
            values = [metrics({column: np.asarray(v)[rows] for column, v in table.items()}) for table in tables]
            cache[key] = {name: float(np.mean([v[name] for v in values])) for name in names}
        return cache[key]

    members = None if groups is None else patient_rows(groups, n)
    n_units = n if members is None else len(members)

    def rows_of(drawn: np.ndarray) -> np.ndarray:
        # bootstrap_ci draws patients; a drawn patient brings all their rows, once per draw.
        return drawn if members is None else np.concatenate([members[i] for i in drawn])

    per_repeat = [dict(metrics(table)) for table in tables]
    result = {}
    for name in names:
        interval = bootstrap_ci(
            np.arange(n_units), np.zeros(n_units), lambda drawn, _, name=name: mean_over_repeats(rows_of(np.asarray(drawn)))[name],
            n_resamples=n_resamples, level=level, seed=seed,
        )
        result[name] = (interval, [float(v[name]) for v in per_repeat])
    return result


def patient_rows(groups: Sequence[object] | np.ndarray | None, n_rows: int) -> list[np.ndarray]:
    """The rows of each patient (resampling unit), patients in sorted order; one row each without ``groups``."""
    if groups is None:
        return [np.array([row]) for row in range(n_rows)]
    labels = np.asarray(groups).astype(str)
    if labels.shape != (n_rows,):
        raise ValueError(f"groups must give one patient per row ({n_rows}), got shape {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
