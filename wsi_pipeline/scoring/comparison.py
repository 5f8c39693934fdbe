"""Paired comparison of two binary models scored on the same patients: DeLong and a paired bootstrap.

Both tests use that the two AUCs come from the same patients, so their errors are correlated;
comparing two independent confidence intervals instead would be far too conservative.

- DeLong's test (:mod:`wsi_pipeline.scoring.delong`): asymptotic, one row per patient.
- Paired bootstrap: each resample draws patients once and computes both AUCs on it; the
  percentile interval of AUC(a) - AUC(b) is reported, with the two-sided p-value
  ``min(1, 2 (1 + min(#{diff <= 0}, #{diff >= 0})) / (1 + B))`` over the B resamples (about
  the smallest level at which the percentile interval would exclude 0; the ``+1`` keeps it
  above 0, which a finite bootstrap cannot show). It draws patients (groups), so it stays
  valid with several rows (slides) per patient, where DeLong's test does not apply.

Which pairs are compared: every model against the mean-pool baseline when there is one
(:data:`BASELINE`), otherwise every pair.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.binary import auc_weighted
from wsi_pipeline.scoring.delong import delong_test
from wsi_pipeline.scoring.resample import bootstrap_weighted

#: The model the others are compared with when present.
BASELINE = "meanpool"


def comparison_pairs(models: Sequence[str], baseline: str = BASELINE) -> list[tuple[str, str]]:
    """The (model, reference) pairs to compare: each against ``baseline`` if present, else all pairs.

    Parameters
    ----------
    models
        Model names, in report order.
    baseline
        The reference model.

    Returns
    -------
    list of tuple
        ``(a, b)`` pairs; the test is of AUC(a) - AUC(b).
    """
    if baseline in models:
        return [(model, baseline) for model in models if model != baseline]
    return list(itertools.combinations(models, 2))


def paired_bootstrap_auc(
    labels: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile interval and p-value of AUC(a) - AUC(b) under a paired patient bootstrap.

    Parameters
    ----------
    labels
        0/1 per row.
    scores_a, scores_b
        The models' scores, aligned with ``labels``.
    groups
        Patient of each row (the resampling unit); default one row per patient.
    n_resamples, level, seed
        Bootstrap settings.

    Returns
    -------
    dict
        ``{"value", "ci_low", "ci_high", "p_value", "n_resamples"}`` (NaN-free: undefined is None).
    """
    y = np.asarray(labels, dtype=np.float64)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)

    def difference(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"difference": auc_weighted(y, a, weights) - auc_weighted(y, b, weights)}

    draws = bootstrap_weighted(difference, y.size, groups=groups, n_resamples=n_resamples, seed=seed)
    interval = draws.interval("difference", level)
    values = draws.values["difference"]
    return {**interval.as_dict(), "p_value": bootstrap_p_value(values), "n_resamples": len(values)}


def bootstrap_p_value(differences: ArrayLike) -> float | None:
    """Two-sided p of a paired bootstrap: ``min(1, 2 (1 + min(#{d <= 0}, #{d >= 0})) / (1 + B))``.

    Parameters
    ----------
    differences
        The B finite bootstrap values of a difference.

    Returns
    -------
    float or None
        The p-value; None without any value.
    """
    values = np.asarray(differences, dtype=np.float64)
    if not len(values):
        return None
    # +1 on both sides: the observed data counts as one resample, so p is never 0 (at least 2 / (B + 1)).
    extreme = min(np.count_nonzero(values <= 0), np.count_nonzero(values >= 0))
    return min(1.0, 2.0 * (1 + extreme) / (1 + len(values)))


def compare_models(
    labels: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """DeLong's test (one row per patient only) and the paired bootstrap of AUC(a) - AUC(b).

    Parameters
    ----------
    labels, scores_a, scores_b, groups, n_resamples, level, seed
        As for :func:`paired_bootstrap_auc`.

    Returns
    -------
    dict
        ``{"n_patients", "auc_difference": {value, ci_low, ci_high, p_value, n_resamples},
        "delong": {z, p_value, se, ci_low, ci_high} or None}``; ``delong`` is None with
        several rows per patient or fewer than two patients of a class.
    """
    y = np.asarray(labels, dtype=np.float64)
    n_patients = len(np.unique(np.asarray(groups).astype(str))) if groups is not None else int(y.size)
    delong = None
    one_row_each = groups is None or n_patients == y.size
    if one_row_each and min(int(y.sum()), int(y.size - y.sum())) >= 2:
        result = delong_test(y, scores_a, scores_b, level=level)
        delong = {"z": _number(result.z), "p_value": _number(result.p_value), "se": _number(result.se),
                  "ci_low": _number(result.ci_low), "ci_high": _number(result.ci_high)}
    bootstrap = paired_bootstrap_auc(y, scores_a, scores_b, groups=groups, n_resamples=n_resamples, level=level, seed=seed)
    return {"n_patients": n_patients, "auc_difference": bootstrap, "delong": delong}


def _number(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
