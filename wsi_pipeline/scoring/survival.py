"""Kaplan-Meier curves and the log-rank test between groups of patients (lifelines).

Typical use: split patients by predicted class (``score >= threshold``) and ask whether the
predicted responders progress later than the predicted non-responders.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class KMGroups:
    """Kaplan-Meier fits per group and the log-rank test between the groups.

    Attributes
    ----------
    fitters
        One fitted ``lifelines.KaplanMeierFitter`` per group, in sorted group order; each
        fitter's label is the group's display label.
    logrank_p
        p-value of the log-rank test that all groups share one survival curve; ``nan`` when
        fewer than two groups are present or no event was observed.
    test_statistic
        The log-rank chi-squared statistic (``nan`` when ``logrank_p`` is).
    n
        Patients per group.
    n_events
        Observed events per group.
    """

    fitters: dict[Hashable, KaplanMeierFitter]
    logrank_p: float
    test_statistic: float
    n: dict[Hashable, int] = field(default_factory=dict)
    n_events: dict[Hashable, int] = field(default_factory=dict)


def km_by_group(
    times: ArrayLike,
    events: ArrayLike,
    groups: ArrayLike,
    *,
    labels: Mapping[Hashable, str] | None = None,
) -> KMGroups:
    """Fit one Kaplan-Meier curve per group and test the groups with the log-rank test.

    Parameters
    ----------
    times
        Follow-up time per patient (e.g. PFS in months), finite and >= 0.
    events
        1 if the event (progression/death) was observed, 0 if censored.
    groups
        Group of each patient (e.g. ``scores >= 0.5``); any hashable values.
    labels
        Optional display label per group value (used by plots); defaults to ``str(group)``.

    Returns
    -------
    KMGroups
        Fitters per group, log-rank p-value and test statistic, counts.

    Raises
    ------
    ValueError
        On mismatched lengths, missing or negative times, or events other than 0/1. The
        scoring stage validates user tables before calling this, so these are programming
        errors here.
    """
    t = np.asarray(times, dtype=float)
    e = np.asarray(events, dtype=float)
    g = np.asarray(groups)
    if not (t.ndim == e.ndim == g.ndim == 1 and t.size == e.size == g.size):
        raise ValueError(f"times, events, groups must be 1-D of equal length, got {t.shape}, {e.shape}, {g.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and >= 0 (drop patients without follow-up first)")
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise ValueError("events must be 0 (censored) or 1 (observed)")
    e = e.astype(int)

    group_values = sorted(set(g.tolist()), key=lambda v: (str(type(v)), v))
    fitters: dict[Hashable, KaplanMeierFitter] = {}
    n: dict[Hashable, int] = {}
    n_events: dict[Hashable, int] = {}
    for value in group_values:
        mask = g == value
        label = labels[value] if labels is not None and value in labels else str(value)
        fitters[value] = KaplanMeierFitter(label=label).fit(t[mask], e[mask])
        n[value] = int(mask.sum())
        n_events[value] = int(e[mask].sum())

    # With one group there is nothing to compare; with no events lifelines reports p = 1,
    # which would read as "no difference" when the data simply cannot tell.
    if len(group_values) < 2 or e.sum() == 0:
        return KMGroups(fitters, math.nan, math.nan, n, n_events)
    result = multivariate_logrank_test(t, g, e)
    return KMGroups(fitters, float(result.p_value), float(result.test_statistic), n, n_events)


def logrank_p(times: ArrayLike, events: ArrayLike, groups: ArrayLike) -> float:
    """Log-rank p-value between groups (see :func:`km_by_group`); ``nan`` when undefined.

    Parameters
    ----------
    times
        Follow-up time per patient.
    events
        1 observed, 0 censored.
    groups
        Group of each patient.

    Returns
    -------
    float
        The p-value, or ``nan`` with fewer than two groups or no events.
    """
    return km_by_group(times, events, groups).logrank_p


def predicted_groups(scores: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Predicted class of each patient: ``True`` where ``score >= threshold``.

    Parameters
    ----------
    scores
        Predicted probability of class 1.
    threshold
        Decision threshold; the same one as for accuracy.

    Returns
    -------
    numpy.ndarray
        Boolean array, ``True`` = predicted class 1.
    """
    return np.asarray(scores, dtype=float) >= threshold
