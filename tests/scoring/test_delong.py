"""DeLong's test: a hand-worked example, the fast midrank algorithm against the O(m n) definition,
and pROC's published values on the aSAH data set.

pROC (Robin et al. 2011) publishes, in its own test suite, DeLong's AUC variances, covariances and
paired test statistics for three markers of its ``aSAH`` data set (Turck et al. 2010: 113 patients
with an aneurysmal subarachnoid haemorrhage, 41 poor and 72 good outcomes). The raw values are not
available offline, but AUCs and DeLong's statistics depend only on how each poor-outcome patient
ranks against each good-outcome patient, and pROC's tests also publish each patient's placements
(the fraction of the other class each patient outranks). The ranks below were rebuilt from those
placements, and checked to reproduce every placement exactly; the scores here are those ranks.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from wsi_pipeline.scoring.delong import delong_components, delong_test


def slow_components(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DeLong et al. 1988 written out: psi over every (positive, negative) pair, per model."""
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, y = s[labels == 1], s[labels == 0]
        psi = np.array(
            [[1.0 if xi > yj else 0.5 if xi == yj else 0.0 for yj in y] for xi in x]
        )
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    v10, v01 = np.array(v10s), np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    # S10_rs = sum_i (V10_r(i) - A_r)(V10_s(i) - A_s) / (m - 1), likewise S01; S = S10/m + S01/n.
    s10 = (
        (v10 - v10.mean(axis=1, keepdims=True))
        @ (v10 - v10.mean(axis=1, keepdims=True)).T
        / (m - 1)
    )
    s01 = (
        (v01 - v01.mean(axis=1, keepdims=True))
        @ (v01 - v01.mean(axis=1, keepdims=True)).T
        / (n - 1)
    )
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
    assert (
        result.difference == 0
        and result.se == pytest.approx(0.5)
        and result.p_value == 1.0
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_midrank_algorithm_equals_the_definition(seed):
    rng = np.random.default_rng(seed)
    n = 70
    labels = rng.integers(0, 2, n)
    # Coarse scores: many ties within and between classes; three correlated models.
    base = labels + rng.normal(0, 1, n)
    scores = np.round(
        np.vstack(
            [
                base + rng.normal(0, 0.5, n),
                base + rng.normal(0, 1.5, n),
                rng.normal(0, 1, n),
            ]
        ),
        1,
    )
    fast = delong_components(labels, scores)
    auc, v10, v01, covariance = slow_components(labels, scores)
    np.testing.assert_allclose(fast.auc, auc, atol=1e-12)
    np.testing.assert_allclose(
        fast.auc, [roc_auc_score(labels, s) for s in scores], atol=1e-12
    )
    np.testing.assert_allclose(fast.v10, v10, atol=1e-12)
    np.testing.assert_allclose(fast.v01, v01, atol=1e-12)
    np.testing.assert_allclose(fast.covariance, covariance, atol=1e-14)

    result = delong_test(labels, scores[0], scores[1])
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    z = (auc[0] - auc[1]) / np.sqrt(variance)
    assert result.z == pytest.approx(z) and result.p_value == pytest.approx(
        2 * norm.sf(abs(z))
    )
    half = norm.ppf(0.975) * np.sqrt(variance)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (auc[0] - auc[1] - half, auc[0] - auc[1] + half)
    )


def test_a_clearly_better_model_is_significant_and_a_twin_is_not():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    good = labels * 2.0 + rng.normal(0, 1, 200)
    noise = rng.normal(0, 1, 200)
    assert delong_test(labels, good, noise).p_value < 1e-6
    assert (
        delong_test(labels, good, good + 1.0).p_value == 1.0
    )  # same ranking: difference 0, se 0


def test_hanley_mcneil_1982_ct_ratings():
    # Hanley and McNeil (1982, Radiology 143:29), Table 1: 109 CT images rated 1-5, 58 normal
    # (33, 6, 6, 11, 2) and 51 abnormal (3, 2, 2, 11, 33). Published: area 0.893, standard error
    # 0.032 by their exponential approximation. DeLong's (distribution-free) SE of the same area is
    # not published there; it must land close to theirs.
    ratings = np.arange(1, 6)
    scores = np.r_[
        np.repeat(ratings, [33, 6, 6, 11, 2]), np.repeat(ratings, [3, 2, 2, 11, 33])
    ]
    labels = np.r_[np.zeros(58), np.ones(51)]
    parts = delong_components(labels, scores)
    assert round(float(parts.auc[0]), 3) == 0.893
    assert np.sqrt(parts.covariance[0, 0]) == pytest.approx(0.032, abs=0.003)


# aSAH ranks per marker: (41 poor-outcome patients, 72 good-outcome patients), in the data set's
# row order within each outcome, so that the three markers stay paired patient by patient.
# fmt: off
ASAH_RANKS = {
    "wfns": (
        [
            2, 1, 3, 4, 4, 4, 4, 1, 4, 1, 0, 1, 4, 3, 3, 1, 4, 4, 4, 1, 4, 1, 4, 1, 3, 4, 3, 3, 0,
            3, 3, 1, 1, 4, 4, 1, 1, 4, 4, 4, 4
        ],
        [
            0, 0, 0, 0, 4, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 2, 3, 0, 3, 0, 4, 4, 0, 0, 1,
            3, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 1, 3, 1, 0, 3, 0, 0, 4, 3,
            1, 1, 0, 0, 0, 2, 0, 1, 1, 3, 3, 0, 0, 0
        ],
    ),
    "ndka": (
        [
            37, 24, 28, 35, 3, 9, 18, 43, 47, 43, 43, 14, 32, 39, 5, 7, 30, 1, 51, 39, 16, 18, 22,
            30, 41, 26, 39, 7, 49, 34, 3, 12, 39, 3, 11, 43, 20, 32, 45, 18, 35
        ],
        [
            0, 8, 6, 17, 4, 34, 4, 38, 29, 38, 36, 46, 10, 4, 23, 4, 4, 50, 25, 13, 13, 38, 2, 6, 4,
            12, 27, 6, 33, 44, 6, 4, 23, 10, 6, 27, 42, 40, 15, 21, 48, 4, 36, 13, 17, 17, 33, 2,
            36, 23, 10, 17, 38, 17, 21, 6, 13, 17, 42, 8, 23, 26, 44, 19, 23, 10, 42, 15, 31, 40, 4,
            29
        ],
    ),
    "s100b": (
        [
            8, 5, 11, 7, 25, 30, 28, 2, 19, 4, 2, 23, 21, 27, 30, 15, 30, 30, 30, 2, 30, 17, 0, 4,
            13, 30, 15, 30, 3, 15, 8, 5, 6, 13, 30, 9, 30, 18, 30, 30, 25
        ],
        [
            8, 9, 5, 1, 26, 12, 5, 5, 1, 3, 1, 4, 6, 2, 12, 2, 6, 8, 12, 1, 11, 9, 20, 4, 29, 26,
            11, 2, 24, 26, 6, 3, 4, 3, 1, 8, 5, 9, 10, 1, 1, 4, 1, 4, 3, 11, 4, 3, 19, 6, 16, 2, 5,
            18, 2, 1, 14, 22, 5, 10, 3, 9, 5, 2, 1, 12, 10, 26, 12, 10, 29, 27
        ],
    ),
}
# fmt: on


def asah() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    labels = np.r_[np.ones(41), np.zeros(72)]
    return labels, {
        name: np.r_[cases, controls] for name, (cases, controls) in ASAH_RANKS.items()
    }


def test_proc_published_aucs_variances_and_covariances_on_asah():
    # pROC tests/testthat: test-auc (via the placements' theta), test-var and test-cov.
    labels, scores = asah()
    parts = delong_components(
        labels, np.vstack([scores["wfns"], scores["ndka"], scores["s100b"]])
    )
    np.testing.assert_allclose(
        parts.auc, [0.823678861788618, 0.611957994579946, 0.731368563685637], rtol=1e-12
    )
    expected = np.array(
        [
            [0.00146991470882363, -0.000532967856762438, 0.00119615567376754],
            [-0.000532967856762438, 0.0031908105493913, -0.000756164938056579],
            [0.00119615567376754, -0.000756164938056579, 0.00266868245717244],
        ]
    )
    np.testing.assert_allclose(parts.covariance, expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "ci"),
    [
        # pROC tests/testthat/test-roc.test.R, "roc.test statistic and p are as expected with defaults".
        (
            "wfns",
            "s100b",
            2.20898359144091,
            0.0271757822291882,
            (0.0104061769564846, 0.174214419249478),
        ),
        (
            "wfns",
            "ndka",
            2.79777591868904,
            0.00514557970691098,
            (0.0634011709339876, 0.3600405634833566),
        ),
        (
            "ndka",
            "s100b",
            -1.39077002573558,
            0.164295175223054,
            (-0.2876917446341914, 0.0488706064228094),
        ),
    ],
)
def test_proc_published_paired_tests_on_asah(a, b, z, p, ci):
    labels, scores = asah()
    result = delong_test(labels, scores[a], scores[b], level=0.95)
    assert result.z == pytest.approx(z, rel=1e-10)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx(ci, rel=1e-9)
    # Swapping the models flips the sign and keeps p (pROC's "reversed" test).
    swapped = delong_test(labels, scores[b], scores[a])
    assert swapped.z == pytest.approx(
        -z, rel=1e-10
    ) and swapped.p_value == pytest.approx(p, rel=1e-9)
