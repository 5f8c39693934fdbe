"""Kaplan-Meier by group and the log-rank test."""

import math

import numpy as np
import pytest

from wsi_pipeline.scoring.survival import km_by_group, logrank_p, predicted_groups


def test_clearly_separated_groups_have_small_p():
    rng = np.random.default_rng(0)
    short = rng.exponential(4.0, 60)  # median PFS ~ 3 months
    long = rng.exponential(30.0, 60)  # median PFS ~ 21 months
    times = np.concatenate([short, long])
    events = np.ones(120, dtype=int)
    groups = np.array([False] * 60 + [True] * 60)
    km = km_by_group(times, events, groups)
    assert km.logrank_p < 0.01
    assert km.n == {False: 60, True: 60}
    assert km.n_events == {False: 60, True: 60}
    # the long-survival group's curve lies above at 6 months
    assert km.fitters[True].predict(6.0) > km.fitters[False].predict(6.0)


def test_identical_groups_have_large_p():
    rng = np.random.default_rng(1)
    t = rng.exponential(10.0, 50)
    e = rng.integers(0, 2, 50)
    times = np.concatenate([t, t])
    events = np.concatenate([e, e])
    groups = np.array(["a"] * 50 + ["b"] * 50)
    assert logrank_p(times, events, groups) > 0.05


def test_one_group_or_no_events_gives_nan():
    times = np.array([1.0, 2.0, 3.0, 4.0])
    assert math.isnan(logrank_p(times, [1, 0, 1, 1], [True] * 4))
    assert math.isnan(logrank_p(times, [0, 0, 0, 0], [True, False, True, False]))


def test_labels_name_the_fitters():
    km = km_by_group([1.0, 2.0, 3.0, 4.0], [1, 1, 0, 1], [True, False, True, False],
                     labels={True: "responders", False: "non-responders"})
    assert km.fitters[True].label == "responders"
    assert km.fitters[False].label == "non-responders"


@pytest.mark.parametrize(
    "times, events",
    [([1.0, -2.0], [1, 1]), ([1.0, float("nan")], [1, 1]), ([1.0, 2.0], [1, 2])],
)
def test_invalid_survival_data_is_rejected(times, events):
    with pytest.raises(ValueError):
        km_by_group(times, events, [0, 1])


def test_predicted_groups_threshold_is_inclusive():
    assert predicted_groups([0.2, 0.5, 0.7], 0.5).tolist() == [False, True, True]
