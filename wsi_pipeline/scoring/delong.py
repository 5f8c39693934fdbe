"""DeLong's test for two correlated AUCs (two models scored on the same patients).

DeLong, DeLong and Clarke-Pearson (1988, Biometrics 44:837) estimate the covariance of AUCs
computed on the same patients from the *structural components* of the Mann-Whitney
statistic: for each positive, the fraction of negatives it outranks (V10), and for each
negative, the fraction of positives that outrank it (V01), ties counting one half. Then

    S = cov(V10) / m + cov(V01) / n      (m positives, n negatives; one row and column per model)

and the difference of two AUCs has variance ``S_aa + S_bb - 2 S_ab``; its z statistic is
compared with the standard normal. We compute the components with the midrank algorithm of
Sun and Xu (2014, IEEE Signal Processing Letters 21:1389): for a positive, the number of
negatives below it is its midrank among all rows minus its midrank among the positives,
so everything costs a few sorts (O(N log N)) instead of comparing every pair (O(m n)).

The test assumes independent rows: one row per patient. With several rows per patient
(slides), use the paired bootstrap of :mod:`wsi_pipeline.scoring.comparison`, which draws patients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLongComponents:
    """AUCs and their DeLong covariance for k models on the same rows.

    Attributes
    ----------
    auc
        (k,) AUC of each model.
    v10
        (k, m) structural components of the positives.
    v01
        (k, n) structural components of the negatives.
    covariance
        (k, k) estimated covariance of the AUCs.
    """

    auc: np.ndarray
    v10: np.ndarray
    v01: np.ndarray
    covariance: np.ndarray


def delong_components(labels: ArrayLike, scores: ArrayLike) -> DeLongComponents:
    """Structural components and covariance of the AUCs of one or more models (Sun and Xu's midranks).

    Parameters
    ----------
    labels
        0/1 per row, both classes present, at least two of each (a covariance needs two).
    scores
        (rows,) scores of one model or (k, rows) of k models; higher means more likely 1.

    Returns
    -------
    DeLongComponents
        AUCs, components and covariance.
    """
    y = np.asarray(labels).reshape(-1).astype(int)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.size:
        raise ValueError(f"scores must have shape (k, {y.size}), got {s.shape}")
    positives, negatives = s[:, y == 1], s[:, y == 0]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's covariance needs at least 2 positives and 2 negatives, got {m} and {n}")
    within_pos = rankdata(positives, axis=1)
    within_neg = rankdata(negatives, axis=1)
    overall = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    # Negatives below a positive (ties 1/2) = its rank among all - its rank among positives.
    v10 = (overall[:, :m] - within_pos) / n
    # Positives above a negative = m - (its rank among all - its rank among negatives).
    v01 = 1.0 - (overall[:, m:] - within_neg) / m
    auc = v10.mean(axis=1)
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return DeLongComponents(auc, v10, v01, covariance)


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of AUC(a) - AUC(b) = 0.

    Attributes
    ----------
    auc_a, auc_b
        The two AUCs.
    difference
        ``auc_a - auc_b``.
    se
        Standard error of the difference.
    z
        ``difference / se`` (NaN when ``se`` is 0).
    p_value
        Two-sided p-value (1 for identical rankings, where the difference and its SE are 0).
    ci_low, ci_high
        Normal-theory confidence interval of the difference at ``level``.
    level
        Confidence level of the interval.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    level: float


def delong_test(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, *, level: float = 0.95) -> DeLongResult:
    """Compare the AUCs of two models on the same rows (two-sided DeLong test).

    Parameters
    ----------
    labels
        0/1 per row (one row per patient).
    scores_a, scores_b
        The two models' scores, aligned with ``labels``.
    level
        Confidence level of the interval of the difference.

    Returns
    -------
    DeLongResult
        AUCs, difference, standard error, z, p-value and interval.
    """
    parts = delong_components(labels, np.vstack([np.asarray(scores_a, float), np.asarray(scores_b, float)]))
    cov = parts.covariance
    difference = float(parts.auc[0] - parts.auc[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(variance) if variance > 0 else 0.0
    if se > 0:
        z = difference / se
        p = float(2.0 * norm.sf(abs(z)))
    else:
        z, p = math.nan, (1.0 if difference == 0 else math.nan)
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    return DeLongResult(float(parts.auc[0]), float(parts.auc[1]), difference, se, z, p, difference - half, difference + half, level)
