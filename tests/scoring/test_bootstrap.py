"""Patient-level bootstrap intervals."""

import math

import numpy as np
import pytest

from wsi_pipeline.scoring.bootstrap import (
    Interval,
    bootstrap_ci,
    bootstrap_task_metrics,
)


def cohort(n_patients: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels ~ Bernoulli(0.5); scores informative but noisy (true AUC about 0.76)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_patients)
    scores = 1 / (1 + np.exp(-rng.normal(labels * 1.0 - 0.5, 1.0)))
    return labels, scores


@pytest.mark.parametrize("metric", ["auc", "accuracy", "balanced_accuracy"])
def test_interval_contains_point_estimate(metric):
    labels, scores = cohort(100, seed=1)
    ci = bootstrap_ci(labels, scores, metric, n_resamples=200, seed=0)
    assert ci.ci_low <= ci.value <= ci.ci_high
    assert ci.ci_low < ci.ci_high
    assert ci.n_resamples_used == 200


def test_interval_narrows_with_more_patients():
    small = bootstrap_ci(*cohort(40, seed=2), "auc", n_resamples=200, seed=0)
    large = bootstrap_ci(*cohort(400, seed=3), "auc", n_resamples=200, seed=0)
    assert large.ci_high - large.ci_low < small.ci_high - small.ci_low
    # About sqrt(10) narrower in theory; demand at least a factor of 2.
    assert 2 * (large.ci_high - large.ci_low) < small.ci_high - small.ci_low


def test_same_seed_same_interval_other_seed_other_interval():
    labels, scores = cohort(60, seed=4)
    a = bootstrap_ci(labels, scores, "auc", n_resamples=100, seed=7)
    b = bootstrap_ci(labels, scores, "auc", n_resamples=100, seed=7)
    c = bootstrap_ci(labels, scores, "auc", n_resamples=100, seed=8)
    assert a == b
    assert (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)
    assert c.value == a.value  # the point estimate does not depend on the seed


def test_higher_level_gives_wider_interval():
    labels, scores = cohort(80, seed=5)
    narrow = bootstrap_ci(labels, scores, "auc", n_resamples=100, level=0.5, seed=0)
    wide = bootstrap_ci(labels, scores, "auc", n_resamples=100, level=0.95, seed=0)
    assert wide.ci_low < narrow.ci_low and narrow.ci_high < wide.ci_high


def test_single_class_resamples_are_redrawn_and_counted():
    # One positive among 12 patients: about (11/12)**12 = 35% of resamples miss it.
    labels = np.array([1] + [0] * 11)
    scores = np.linspace(0.9, 0.0, 12)
    ci = bootstrap_ci(labels, scores, "auc", n_resamples=100, seed=0)
    assert ci.n_undefined > 0
    assert ci.n_resamples_used == 100
    assert math.isfinite(ci.ci_low) and math.isfinite(ci.ci_high)
    assert ci.value == 1.0


def test_accuracy_needs_no_redraws():
    labels = np.array([1] + [0] * 11)
    ci = bootstrap_ci(labels, np.linspace(0.9, 0.0, 12), "accuracy", n_resamples=100, seed=0)
    assert ci.n_undefined == 0 and ci.n_resamples_used == 100


def test_metric_undefined_on_all_patients_gives_nan_interval():
    ci = bootstrap_ci([1, 1, 1, 1], [0.1, 0.4, 0.6, 0.8], "auc", n_resamples=50, seed=0)
    assert math.isnan(ci.value) and math.isnan(ci.ci_low) and math.isnan(ci.ci_high)
    assert ci.n_resamples_used == 0
    assert ci.as_dict() == {"value": None, "ci_low": None, "ci_high": None}


def test_callable_metric_raising_valueerror_counts_as_undefined():
    calls = {"n": 0}

    def picky(labels, scores):
        calls["n"] += 1
        if labels.sum() < 3:
            raise ValueError("needs three positives")
        return float(scores[labels == 1].mean())

    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    ci = bootstrap_ci(labels, np.linspace(1, 0, 8), picky, n_resamples=50, seed=0)
    assert ci.n_undefined > 0 and ci.n_resamples_used == 50
    assert calls["n"] == 1 + 50 + ci.n_undefined


def test_as_dict_has_exactly_the_three_keys():
    ci = Interval(0.8, 0.7, 0.9, 100)
    assert ci.as_dict() == {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}


@pytest.mark.parametrize("kwargs", [{"level": 1.0}, {"level": 0.0}, {"n_resamples": 0}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([0, 1], [0.2, 0.8], "auc", **kwargs)


# -- slide rows: the bootstrap draws patients ---------------------------------------------------
def mean_of(table):
    """A metric that duplicating rows does not change: the mean of column x."""
    return {"mean": float(np.mean(table["x"]))}


def test_slide_rows_resample_patients_so_copies_of_a_patient_do_not_narrow_the_interval():
    rng = np.random.default_rng(0)
    per_patient = rng.normal(size=30)
    patients = np.array([f"P{i:02d}" for i in range(30)])
    slides, owners = np.repeat(per_patient, 4), np.repeat(patients, 4)  # four identical slides per patient

    by_patient = bootstrap_task_metrics([{"x": per_patient}], mean_of, ["mean"], n_resamples=300, seed=3)["mean"][0]
    clustered = bootstrap_task_metrics([{"x": slides}], mean_of, ["mean"], n_resamples=300, seed=3, groups=owners)["mean"][0]
    as_independent = bootstrap_task_metrics([{"x": slides}], mean_of, ["mean"], n_resamples=300, seed=3)["mean"][0]

    # Drawing a patient brings its four copies: the same resampled means as one row per patient.
    assert (clustered.value, clustered.ci_low, clustered.ci_high) == pytest.approx(
        (by_patient.value, by_patient.ci_low, by_patient.ci_high), abs=1e-12
    )
    # Drawing slides treats the copies as independent: about half (1/sqrt(4)) as wide.
    width = clustered.ci_high - clustered.ci_low
    assert as_independent.ci_high - as_independent.ci_low < 0.7 * width


def test_each_resample_holds_all_or_none_of_a_patients_slides():
    owners = np.array(["A", "A", "B", "C", "C", "C"])
    seen = []

    def record(table):
        seen.append(np.asarray(table["row"]))
        return {"n": float(len(table["row"]))}

    bootstrap_task_metrics([{"row": np.arange(6)}], record, ["n"], n_resamples=50, seed=0, groups=owners)
    assert len(seen) > 10
    for rows in seen:
        counts = np.bincount(rows, minlength=6)
        # A patient's slides are drawn together, as often as the patient is: equal counts within a patient.
        assert counts[0] == counts[1] and counts[3] == counts[4] == counts[5]
        assert counts[0] + counts[2] + counts[3] == 3  # three patients drawn per resample


def test_one_row_per_patient_groups_change_nothing():
    x = np.random.default_rng(1).normal(size=25)
    plain = bootstrap_task_metrics([{"x": x}], mean_of, ["mean"], n_resamples=100, seed=5)["mean"][0]
    grouped = bootstrap_task_metrics([{"x": x}], mean_of, ["mean"], n_resamples=100, seed=5,
                                     groups=[f"P{i:02d}" for i in range(25)])["mean"][0]
    assert grouped == plain
