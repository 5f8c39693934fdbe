"""binary_metrics against values worked out by hand."""

import math

import pytest

from wsi_pipeline.scoring.metrics import METRIC_NAMES, binary_metrics, metric_function

# 2 positives (0.8, 0.4) vs 3 negatives (0.2, 0.7, 0.3): 0.8 outranks all 3 negatives,
# 0.4 outranks 2 of 3 -> AUC = 5/6. At threshold 0.5 the predictions are [0, 1, 0, 1, 0].
LABELS = [0, 0, 0, 1, 1]
SCORES = [0.2, 0.7, 0.3, 0.8, 0.4]


def test_auc_of_known_ranking_is_three_quarters():
    # Positives 0.4, 0.9 vs negatives 0.1, 0.6: 3 of the 4 pairs are ordered correctly.
    assert binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])["auc"] == pytest.approx(0.75)


def test_hand_computed_values_at_default_threshold():
    m = binary_metrics(LABELS, SCORES)
    assert set(m) == set(METRIC_NAMES)
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(3 / 5)  # right on patients 0, 2, 3
    # sensitivity 1/2 (0.8 yes, 0.4 no), specificity 2/3 (0.7 is a false positive)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_threshold_moves_accuracy_but_not_auc():
    m = binary_metrics(LABELS, SCORES, threshold=0.35)
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


def test_score_equal_to_threshold_is_predicted_positive():
    assert binary_metrics([0, 1], [0.2, 0.5], threshold=0.5)["accuracy"] == 1.0


def test_single_class_auc_and_balanced_accuracy_are_nan():
    m = binary_metrics([1, 1, 1], [0.2, 0.6, 0.9])
    assert math.isnan(m["auc"])
    assert math.isnan(m["balanced_accuracy"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_unknown_metric_name_is_rejected():
    with pytest.raises(ValueError, match="unknown metric"):
        metric_function("f1")


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        binary_metrics([0, 1, 1], [0.1, 0.2])
