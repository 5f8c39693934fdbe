"""Bootstrap by resample weights: coverage on simulated data, the level, patient groups, redraws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from wsi_pipeline.scoring.binary import auc_weighted, binary_metric_arrays
from wsi_pipeline.scoring.bootstrap import bootstrap_ci
from wsi_pipeline.scoring.resample import (
    bootstrap_weighted,
    group_codes,
    resample_weights,
)


def auc_interval(y, s, *, level=0.95, n_resamples=1000, seed=0, groups=None):
    draws = bootstrap_weighted(lambda w: {"auc": auc_weighted(y, s, w)}, len(y), groups=groups, n_resamples=n_resamples, seed=seed)
    return draws.interval("auc", level)


def test_coverage_of_a_known_auc_is_about_nominal():
    # Binormal scores: negatives N(0, 1), positives N(d, 1), so the true AUC is Phi(d / sqrt 2) = 0.75.
    # 200 data sets of 150 patients (30% positive); 400 resamples each (not 1,000) to keep the test fast:
    # the percentile bounds move by about 0.005 between 400 and 1,000 resamples, well inside the tolerance.
    # Tolerance [0.89, 0.99]: the binomial SD of a coverage of 0.95 over 200 data sets is 0.015, and the
    # percentile bootstrap of an AUC under-covers by about 1-2 points at this size; 0.89 is ~4 SD below.
    d = np.sqrt(2) * norm.ppf(0.75)
    rng = np.random.default_rng(11)
    covered = 0
    for k in range(200):
        y = (rng.random(150) < 0.3).astype(int)
        s = rng.normal(d * y, 1.0)
        interval = auc_interval(y, s, n_resamples=400, seed=k)
        covered += interval.ci_low <= 0.75 <= interval.ci_high
    assert 0.89 <= covered / 200 <= 0.99


def test_lower_level_gives_a_narrower_interval_inside_the_wider():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    s = rng.normal(y, 1.0)
    wide, narrow = auc_interval(y, s, level=0.95), auc_interval(y, s, level=0.8)
    assert wide.value == narrow.value and narrow.level == 0.8
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_weights_reproduce_drawing_rows_and_the_existing_bootstrap():
    # Same generator, same draws of one row per patient: the weighted AUC bootstrap equals bootstrap_ci's.
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    s = rng.normal(y, 1.0)
    ours = auc_interval(y, s, n_resamples=100, seed=5)
    reference = bootstrap_ci(y, s, "auc", n_resamples=100, seed=5)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((reference.ci_low, reference.ci_high))


def test_a_patient_rows_enter_a_resample_together():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    s = rng.normal(y, 1.0)
    patients = np.array([f"p{i:02d}" for i in range(50)])
    # Every patient twice (two identical slides): drawing patients gives the one-row-per-patient interval...
    twice_y, twice_s, twice_p = np.repeat(y, 2), np.repeat(s, 2), np.repeat(patients, 2)
    grouped = auc_interval(twice_y, twice_s, groups=twice_p, seed=4)
    single = auc_interval(y, s, seed=4)
    assert (grouped.ci_low, grouped.ci_high) == pytest.approx((single.ci_low, single.ci_high))
    # ...while drawing rows treats the copies as independent patients: a falsely narrow interval.
    rows = auc_interval(twice_y, twice_s, seed=4)
    assert rows.ci_high - rows.ci_low < 0.85 * (single.ci_high - single.ci_low)
    weights = resample_weights(group_codes(twice_p, 100), 20, rng)
    assert np.array_equal(weights[:, 0::2], weights[:, 1::2]) and (weights.sum(axis=1) == 100).all()


def test_undefined_resamples_are_redrawn_and_counted():
    # One positive in 30: about a third of resamples miss it and have no AUC.
    y = np.zeros(30, dtype=int)
    y[0] = 1
    s = np.linspace(0, 1, 30)[::-1]
    draws = bootstrap_weighted(lambda w: binary_metric_arrays(y, s, 0.5, w), 30, n_resamples=200, seed=0)
    interval = draws.interval("auc", 0.95)
    assert interval.n_resamples_used == 200 and 30 < interval.n_undefined < 150
    assert draws.interval("accuracy", 0.95).n_undefined == 0  # accuracy is always defined
