"""Time-dependent (cumulative/dynamic) AUC of a survival risk, weighted for censoring, for many resamples at once.

At a horizon ``t``, cases are the patients whose event happened by ``t`` (``T <= t``, event
observed) and controls those still event-free after ``t`` (``T > t``). The AUC is the chance that
a case has a higher risk than a control (ties count one half). Patients censored before ``t``
are neither; dropping them would favour early, easy events, so each case is weighted by the
inverse probability of having stayed uncensored until its event time, ``1 / G(T_i-)``, with
``G`` the Kaplan-Meier estimate of the censoring distribution (Uno et al. 2007; the estimator of
scikit-survival's ``cumulative_dynamic_auc``, which is not a dependency here). Without
censoring before ``t`` it is the plain ROC AUC of "event by t" (the tests check both this and a
hand-worked example).

As in :mod:`wsi_pipeline.scoring.binary`, rows come once with a (resamples, rows) weight matrix;
``G`` is re-estimated on every resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.binary_intervals import interval_entry
from wsi_pipeline.scoring.resample import bootstrap_weighted

#: metrics.json's keys of time-dependent AUCs start with this.
TIME_AUC_PREFIX = "td_auc_"


def metric_name(horizon: float) -> str:
    """metrics.json's key of the AUC at a horizon: ``td_auc_<t>`` (e.g. ``td_auc_12``, ``td_auc_6.5``)."""
    return f"{TIME_AUC_PREFIX}{horizon:g}"


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def censoring_survival_before(time: np.ndarray, event: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kaplan-Meier estimate of the censoring distribution just before each row's time, per resample.

    Parameters
    ----------
    time, event
        Follow-up time and 1/0 event indicator per row.
    weights
        (B, rows) counts.

    Returns
    -------
    numpy.ndarray
        (B, rows): ``G(T_i-)``, the estimated probability of being uncensored just before
        ``T_i`` (censorings are the "events" of this estimate; an event and a censoring at the
        same time count the censoring after the event).
    """
    distinct, index = np.unique(time, return_inverse=True)
    n_distinct = len(distinct)
    # Weighted censorings at each distinct time, and weighted rows at risk (time >= it).
    at_time = np.zeros((time.size, n_distinct))
    at_time[np.arange(time.size), index] = 1.0
    censored = (weights * (event == 0)) @ at_time
    at_risk = np.cumsum((weights @ at_time)[:, ::-1], axis=1)[:, ::-1]
    factors = 1.0 - _ratio(censored, at_risk)
    factors[at_risk <= 0] = 1.0
    after = np.cumprod(factors, axis=1)  # G at each distinct time (right-continuous)
    before = np.concatenate([np.ones((weights.shape[0], 1)), after[:, :-1]], axis=1)
    return before[:, index]


def time_auc_weighted(time: ArrayLike, event: ArrayLike, risk: ArrayLike, horizon: float, weights: ArrayLike | None = None) -> np.ndarray:
    """Cumulative/dynamic AUC of ``risk`` at ``horizon`` for each resample (see the module docstring).

    Parameters
    ----------
    time, event
        Follow-up time (>= 0) and 1 = event, 0 = censored, per row; rows with a missing time
        or event are left out.
    risk
        Predicted risk per row (higher = earlier event).
    horizon
        The time ``t``, in the unit of ``time``.
    weights
        (B, rows) counts; default one resample of weight 1.

    Returns
    -------
    numpy.ndarray
        (B,) AUCs; NaN where a resample has no case or no control.
    """
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    e = np.asarray(event, dtype=np.float64).reshape(-1)
    r = np.asarray(risk, dtype=np.float64).reshape(-1)
    w = np.ones((1, t.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    followed = np.isfinite(t) & np.isfinite(e)
    t, e, r, w = t[followed], e[followed], r[followed], w[:, followed]
    case = (t <= horizon) & (e == 1)
    control = t > horizon
    if t.size == 0:
        return np.full(w.shape[0], np.nan)
    inverse = _ratio(np.ones_like(w), censoring_survival_before(t, e, w))
    case_weight = np.where(case, w * np.nan_to_num(inverse), 0.0)
    control_weight = np.where(control, w, 0.0)
    # Pairs (case i, control j): 1 when i's risk is higher, 1/2 on a tie.
    order = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    concordant = ((case_weight @ order) * control_weight).sum(axis=1)
    return _ratio(concordant, case_weight.sum(axis=1) * control_weight.sum(axis=1))


def time_auc_intervals(
    repeats: Sequence[Any],
    time_column: str,
    event_column: str,
    horizons: Sequence[float],
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """metrics.json entries ``td_auc_<t>`` for each horizon: the AUC averaged over repeats, with its patient-bootstrap interval.

    Parameters
    ----------
    repeats
        One table per repeat (``time_column``, ``event_column``, ``risk``), rows aligned.
    time_column, event_column
        The follow-up columns.
    horizons
        The times ``t``.
    groups
        The patient of each row when rows are slides.
    n_resamples, level, seed
        Bootstrap settings (the same draws as every other interval of the stage).

    Returns
    -------
    dict
        ``td_auc_<t>`` -> ``{"value", "ci_low", "ci_high"}`` (+ ``per_repeat`` with several repeats).
    """
    first = repeats[0]
    time = np.asarray(first[time_column], dtype=np.float64)
    event = np.asarray(first[event_column], dtype=np.float64)
    risks = [np.asarray(r["risk"], dtype=np.float64) for r in repeats]
    names = {metric_name(h): float(h) for h in horizons}

    def mean_over_repeats(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.mean([time_auc_weighted(time, event, r, h, weights) for r in risks], axis=0) for name, h in names.items()}

    draws = bootstrap_weighted(mean_over_repeats, time.size, groups=groups, n_resamples=n_resamples, seed=seed)
    per_repeat = {name: [float(time_auc_weighted(time, event, r, h)[0]) for r in risks] for name, h in names.items()}
    return {name: interval_entry(draws.interval(name, level), per_repeat[name]) for name in names}
