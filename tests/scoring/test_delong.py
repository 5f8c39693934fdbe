"""DeLong's test: a hand-worked example, and the fast midrank algorithm against the O(m n) definition.

Published worked values (DeLong et al. 1988's example, pROC's aSAH comparison) need their data
sets, which are not available offline here; so, as the issue allows, the structural components
and covariance are checked against an independent slow implementation written from the paper's
definitions, on data with many ties.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from wsi_pipeline.scoring.delong import delong_components, delong_test


def slow_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DeLong et al. 1988 written out: psi over every (positive, negative) pair, per model."""
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, y = s[labels == 1], s[labels == 0]
        psi = np.array([[1.0 if xi > yj else 0.5 if xi == yj else 0.0 for yj in y] for xi in x])
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    v10, v01 = np.array(v10s), np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    # S10_rs = sum_i (V10_r(i) - A_r)(V10_s(i) - A_s) / (m - 1), likewise S01; S = S10/m + S01/n.
    s10 = (v10 - v10.mean(axis=1, keepdims=True)) @ (v10 - v10.mean(axis=1, keepdims=True)).T / (m - 1)
    s01 = (v01 - v01.mean(axis=1, keepdims=True)) @ (v01 - v01.mean(axis=1, keepdims=True)).T / (n - 1)
    return np.array(aucs), v10, v01, s10 / m + s01 / n


def test_hand_worked_example():
    # a: positives 0.9, 0.4; negatives 0.5, 0.1 -> V10 = [1, 1/2], V01 = [1/2, 1], AUC 3/4.
    # b: positives 0.8, 0.6; negatives 0.3, 0.7 -> V10 = [1, 1/2], V01 = [1, 1/2], AUC 3/4.
    # S10 = [[1/8, 1/8], [1/8, 1/8]], S01 = [[1/8, -1/8], [-1/8, 1/8]], S = (S10 + S01) / 2.
    labels = np.array([1, 1, 0, 0])
    parts = delong_components(labels, [[0.9, 0.4, 0.5, 0.1], [0.8, 0.6, 0.3, 0.7]])
    np.testing.assert_allclose(parts.auc, [0.75, 0.75])
    np.testing.assert_allclose(parts.v10, [[1, 0.5], [1, 0.5]])
    np.testing.assert_allclose(parts.v01, [[0.5, 1], [1, 0.5]])
    np.testing.assert_allclose(parts.covariance, [[0.125, 0], [0, 0.125]])
    result = delong_test(labels, [0.9, 0.4, 0.5, 0.1], [0.8, 0.6, 0.3, 0.7])
    assert result.difference == 0 and result.se == pytest.approx(0.5) and result.p_value == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_midrank_algorithm_equals_the_definition(seed):
    rng = np.random.default_rng(seed)
    n = 70
    labels = rng.integers(0, 2, n)
    # Coarse scores: many ties within and between classes; three correlated models.
    base = labels + rng.normal(0, 1, n)
    scores = np.round(np.vstack([base + rng.normal(0, 0.5, n), base + rng.normal(0, 1.5, n), rng.normal(0, 1, n)]), 1)
    fast = delong_components(labels, scores)
    auc, v10, v01, covariance = slow_components(labels, scores)
    np.testing.assert_allclose(fast.auc, auc, atol=1e-12)
    np.testing.assert_allclose(fast.auc, [roc_auc_score(labels, s) for s in scores], atol=1e-12)
    np.testing.assert_allclose(fast.v10, v10, atol=1e-12)
    np.testing.assert_allclose(fast.v01, v01, atol=1e-12)
    np.testing.assert_allclose(fast.covariance, covariance, atol=1e-14)

    result = delong_test(labels, scores[0], scores[1])
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    z = (auc[0] - auc[1]) / np.sqrt(variance)
    assert result.z == pytest.approx(z) and result.p_value == pytest.approx(2 * norm.sf(abs(z)))
    half = norm.ppf(0.975) * np.sqrt(variance)
    assert (result.ci_low, result.ci_high) == pytest.approx((auc[0] - auc[1] - half, auc[0] - auc[1] + half))


def test_a_clearly_better_model_is_significant_and_a_twin_is_not():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    good = labels * 2.0 + rng.normal(0, 1, 200)
    noise = rng.normal(0, 1, 200)
    assert delong_test(labels, good, noise).p_value < 1e-6
    assert delong_test(labels, good, good + 1.0).p_value == 1.0  # same ranking: difference 0, se 0


def test_hanley_mcneil_1982_ct_ratings():
    # Hanley and McNeil (1982, Radiology 143:29), Table 1: 109 CT images rated 1-5, 58 normal
    # (33, 6, 6, 11, 2) and 51 abnormal (3, 2, 2, 11, 33). Published: area 0.893, standard error
    # 0.032 by their exponential approximation. DeLong's (distribution-free) SE of the same area is
    # not published there; it must land close to theirs.
    ratings = np.arange(1, 6)
    scores = np.r_[np.repeat(ratings, [33, 6, 6, 11, 2]), np.repeat(ratings, [3, 2, 2, 11, 33])]
    labels = np.r_[np.zeros(58), np.ones(51)]
    parts = delong_components(labels, scores)
    assert round(float(parts.auc[0]), 3) == 0.893
    assert np.sqrt(parts.covariance[0, 0]) == pytest.approx(0.032, abs=0.003)
