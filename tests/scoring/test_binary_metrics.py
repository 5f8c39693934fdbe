"""The weighted, vectorised binary metrics against scikit-learn and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from wsi_pipeline.scoring.binary import (
    BINARY_METRICS,
    binary_metric_arrays,
    binary_metric_values,
)
from wsi_pipeline.scoring.calibration import (
    ece_weighted,
    probability_bins,
    reliability_bins,
)
from wsi_pipeline.scoring.resample import group_codes, resample_weights


def sklearn_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """Every metric computed another way: scikit-learn on explicit rows."""
    p = (s >= threshold).astype(int)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], s), minlength=10)
    counts = counts[counts > 0]  # calibration_curve drops empty bins too
    return {
        "auc": skm.roc_auc_score(y, s),
        "average_precision": skm.average_precision_score(y, s),
        "accuracy": skm.accuracy_score(y, p),
        "balanced_accuracy": skm.balanced_accuracy_score(y, p),
        "f1": skm.f1_score(y, p),
        "sensitivity": skm.recall_score(y, p),
        "specificity": skm.recall_score(1 - y, 1 - p),
        "ppv": skm.precision_score(y, p),
        "npv": skm.precision_score(1 - y, 1 - p),
        "brier": skm.brier_score_loss(y, s),
        "ece": float(np.sum(counts / len(y) * np.abs(prob_true - prob_pred))),
    }


def test_every_metric_equals_scikit_learn_on_each_resample():
    rng = np.random.default_rng(3)
    n = 80
    y = rng.integers(0, 2, n)
    # Rounded scores: ties within and across classes, and scores on bin edges (0.1, 0.2, ...).
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 1)
    weights = resample_weights(group_codes(None, n), 6, rng)
    arrays = binary_metric_arrays(y, s, 0.4, weights)
    assert set(arrays) == set(BINARY_METRICS)
    for b in range(len(weights)):
        rows = np.repeat(np.arange(n), weights[b].astype(int))  # weight = times a row was drawn
        expected = sklearn_metrics(y[rows], s[rows], 0.4)
        for name in BINARY_METRICS:
            assert arrays[name][b] == pytest.approx(expected[name], abs=1e-12), name


def test_point_estimates_equal_scikit_learn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 50)
    s = rng.random(50)
    values = binary_metric_values(y, s, 0.5)
    expected = sklearn_metrics(y, s, 0.5)
    assert values == pytest.approx(expected, abs=1e-12)


def test_undefined_metrics_are_nan():
    one_class = binary_metric_values([1, 1, 1], [0.2, 0.7, 0.9], 0.5)
    assert np.isnan(one_class["auc"]) and np.isnan(one_class["specificity"]) and np.isnan(one_class["balanced_accuracy"])
    assert one_class["sensitivity"] == pytest.approx(2 / 3)
    nothing_positive = binary_metric_values([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.5)
    assert np.isnan(nothing_positive["ppv"]) and nothing_positive["npv"] == 0.5 and nothing_positive["f1"] == 0.0


def test_ece_by_hand_and_its_bins():
    # Bin [0, 0.1] holds 0.1 (an edge belongs to the bin below): mean 0.1, observed 1/2, gap 0.4, 2 of 4 rows.
    # Bin (0.8, 0.9] holds 0.9: mean 0.9, observed 1, gap 0.1, 2 of 4 rows.  ECE = 0.4/2 + 0.1/2 = 0.25.
    y, s = np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])
    assert ece_weighted(y, s)[0] == pytest.approx(0.25)
    assert probability_bins([0.0, 0.1, 0.10001, 0.95, 1.0]).tolist() == [0, 0, 1, 9, 9]
    # A perfectly calibrated bin adds nothing: observed 1/2 at mean 0.5.
    assert ece_weighted([0, 1], [0.5, 0.5])[0] == 0.0


def test_reliability_bins_match_calibration_curve():
    rng = np.random.default_rng(5)
    s = rng.random(300)
    y = (rng.random(300) < s).astype(int)
    bins = reliability_bins(y, s, 10)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10)
    np.testing.assert_allclose(bins.observed, prob_true)
    np.testing.assert_allclose(bins.mean_predicted, prob_pred)
    assert bins.count.sum() == 300
