"""Bootstrap resamples as weights: how often each row enters a resample, drawing patients (groups).

Drawing rows with replacement is the same as giving each row a weight, the number of times it
was drawn. Weights let every resample of a metric be computed at once on arrays of shape
(resamples, rows), and let several rows of one patient (slides) enter or leave a resample
together: we draw *groups* with replacement and give each row its group's count. Resampling
rows instead would treat a patient's correlated slides as independent and give falsely narrow
intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.bootstrap import Interval

#: At most this many resamples are drawn per requested one when a metric is undefined on
#: some (a rare class): then fewer are used and ``n_resamples_used`` says so.
MAX_DRAWS_PER_RESAMPLE = 20


def group_codes(groups: ArrayLike | None, n_rows: int) -> np.ndarray:
    """Integer code 0..G-1 of each row's group; each row its own group when ``groups`` is None.

    Parameters
    ----------
    groups
        One group label (e.g. patient id) per row, or None.
    n_rows
        Number of rows.

    Returns
    -------
    numpy.ndarray
        int64 codes, shape (n_rows,).
    """
    if groups is None:
        return np.arange(n_rows)
    values = np.asarray(groups)
    if values.shape != (n_rows,):
        raise ValueError(f"groups must have one value per row ({n_rows}), got shape {values.shape}")
    _, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.reshape(-1)


def resample_weights(codes: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Draw groups with replacement; each row's weight is how often its group was drawn.

    Parameters
    ----------
    codes
        Group code of each row (:func:`group_codes`), 0..G-1 with every code used.
    n_resamples
        Resamples to draw.
    rng
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        float64 weights, shape (n_resamples, n_rows); each resample draws G groups.
    """
    n_groups = int(codes.max()) + 1 if codes.size else 0
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    # One bincount for all resamples: offset each resample's draws by its own block of G bins.
    flat = (draws + n_groups * np.arange(n_resamples)[:, None]).reshape(-1)
    counts = np.bincount(flat, minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
    return counts[:, codes].astype(np.float64)


@dataclass(frozen=True)
class Draws:
    """Each statistic on the full data and its usable bootstrap values (finite, at most ``n_resamples``)."""

    full: dict[str, float]
    values: dict[str, np.ndarray]
    n_undefined: dict[str, int]

    def interval(self, name: str, level: float) -> Interval:
        """The percentile interval of statistic ``name`` at ``level``."""
        return percentile_interval(self.full[name], self.values[name], self.n_undefined[name], level)


def bootstrap_weighted(
    statistics: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    n_rows: int,
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Draws:
    """Bootstrap distributions of statistics computed from resample weights.

    Parameters
    ----------
    statistics
        ``f(weights (B, n_rows)) -> {name: values (B,)}``, NaN where a statistic is undefined
        on a resample (e.g. AUC when a resample holds one class). Must accept a single row of
        ones (the full data) as well.
    n_rows
        Rows of the data.
    groups
        Resampling unit of each row (patient id); default: each row is one unit.
    n_resamples
        Usable resamples wanted per statistic; undefined ones are redrawn, up to
        :data:`MAX_DRAWS_PER_RESAMPLE` draws per requested resample.
    seed
        Seed of the ``numpy.random.Generator``: the same seed and groups give the same
        resamples, so two models on the same patients are compared on the same draws.

    Returns
    -------
    Draws
        Each statistic on the full data; its first ``n_resamples`` finite values, in draw
        order, and how many undefined values were skipped before them. A statistic undefined
        on the full data is undefined on every resample: it gets no draws (and costs none).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    full = {name: float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) for name, v in statistics(np.ones((1, n_rows))).items()}
    wanted = [name for name, value in full.items() if math.isfinite(value)]
    codes = group_codes(groups, n_rows)
    rng = np.random.default_rng(seed)
    kept: dict[str, list[np.ndarray]] = {name: [] for name in full}
    n_kept = dict.fromkeys(full, 0)
    n_undefined = dict.fromkeys(full, 0)
    drawn = 0
    while wanted and drawn < MAX_DRAWS_PER_RESAMPLE * n_resamples:
        block = n_resamples if drawn == 0 else min(n_resamples, MAX_DRAWS_PER_RESAMPLE * n_resamples - drawn)
        values = statistics(resample_weights(codes, block, rng))
        drawn += block
        for name in wanted:
            v = np.asarray(values[name], dtype=np.float64)
            need = n_resamples - n_kept[name]
            if need <= 0:
                continue
            finite = np.isfinite(v)
            # Undefined draws counted only up to the last one kept, as a one-by-one redraw would.
            position = np.flatnonzero(finite)
            take = position[:need]
            seen = int(take[-1]) + 1 if len(take) == need else len(v)
            kept[name].append(v[take])
            n_kept[name] += len(take)
            n_undefined[name] += int((~finite[:seen]).sum())
        if all(n_kept[name] >= n_resamples for name in wanted):
            break
    values = {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in kept.items()}
    return Draws(full, values, n_undefined)


def percentile_interval(value: float, draws: np.ndarray, n_undefined: int, level: float) -> Interval:
    """The percentile interval of bootstrap ``draws`` around the full-data ``value``.

    Parameters
    ----------
    value
        The statistic on all rows (NaN if undefined: then no interval).
    draws
        Its finite bootstrap values.
    n_undefined
        Resamples skipped because the statistic was undefined on them.
    level
        Confidence level in (0, 1), e.g. 0.95 for the 2.5th and 97.5th percentiles.

    Returns
    -------
    Interval
        ``value`` with the interval (NaN bounds when there are no draws).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not math.isfinite(value) or len(draws) == 0:
        return Interval(float(value), math.nan, math.nan, 0, n_undefined, level)
    alpha = 1.0 - level
    low, high = np.quantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(float(value), float(low), float(high), len(draws), n_undefined, level)
