"""Decision thresholds: Youden's J and a target sensitivity, by hand."""

from __future__ import annotations

import pytest

from wsi_pipeline.scoring.threshold import (
    choose_threshold,
    sensitivity_threshold,
    youden_threshold,
)

# Scores descending with labels: 0.9 (1), 0.8 (1), 0.7 (0), 0.6 (1), 0.4 (0), 0.3 (0), 0.2 (1), 0.1 (0).
LABELS = [1, 1, 0, 1, 0, 0, 1, 0]
SCORES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]


def test_youden_by_hand():
    # J at each threshold (score >= t): 0.9: 1/4 - 0; 0.8: 2/4; 0.7: 2/4 - 1/4; 0.6: 3/4 - 1/4 = 1/2;
    # 0.4: 3/4 - 2/4; ... The maximum 1/2 is reached at 0.8 and 0.6: the higher threshold is taken.
    assert youden_threshold(LABELS, SCORES) == 0.8


def test_target_sensitivity_by_hand():
    # Sensitivity reaches 3/4 first at 0.6, and 1 only at 0.2.
    assert sensitivity_threshold(LABELS, SCORES, 0.75) == 0.6
    assert sensitivity_threshold(LABELS, SCORES, 0.9) == 0.2
    assert sensitivity_threshold(LABELS, SCORES, 0.5) == 0.8


def test_choose_threshold_records_where_it_came_from():
    fixed = choose_threshold("fixed", fixed=0.3)
    assert fixed.value == 0.3 and fixed.n_validation == 0 and "fixed in advance" in fixed.describe()
    chosen = choose_threshold("sensitivity", validation_labels=LABELS, validation_scores=SCORES, target_sensitivity=0.75)
    assert chosen.as_dict() == {"value": 0.6, "method": "sensitivity", "n_validation": 8, "target_sensitivity": 0.75}
    with pytest.raises(ValueError, match="validation"):
        choose_threshold("youden")
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold([1, 1], [0.2, 0.3])
