"""Paired comparisons (pairs, paired bootstrap, DeLong's applicability) and the AUC's permutation p-value."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from wsi_pipeline.scoring.comparison import (
    compare_models,
    comparison_pairs,
    paired_bootstrap_auc,
)
from wsi_pipeline.scoring.permutation import auc_permutation_p


def test_pairs_against_the_baseline_else_all():
    assert comparison_pairs(["abmil", "clam", "meanpool"]) == [("abmil", "meanpool"), ("clam", "meanpool")]
    assert comparison_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert comparison_pairs(["a"]) == []


def test_paired_bootstrap_of_a_model_with_itself_is_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = rng.normal(y, 1.0)
    result = paired_bootstrap_auc(y, s, s * 2 + 1)  # same ranking
    assert result["value"] == result["ci_low"] == result["ci_high"] == 0.0 and result["p_value"] == 1.0


def test_paired_bootstrap_detects_a_better_model_and_agrees_with_delong():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 150)
    good, weak = y * 2.0 + rng.normal(0, 1, 150), y * 0.5 + rng.normal(0, 1, 150)
    result = compare_models(y, good, weak)
    boot, delong = result["auc_difference"], result["delong"]
    assert boot["ci_low"] > 0 and boot["p_value"] < 0.01 and delong["p_value"] < 0.01
    # Both intervals estimate the same quantity: their bounds agree to a few hundredths here.
    assert boot["ci_low"] == pytest.approx(delong["ci_low"], abs=0.04)
    assert boot["ci_high"] == pytest.approx(delong["ci_high"], abs=0.04)


def test_delong_is_skipped_with_several_rows_per_patient():
    rng = np.random.default_rng(2)
    y = np.repeat(rng.integers(0, 2, 40), 2)
    groups = np.repeat(np.arange(40), 2)
    result = compare_models(y, rng.normal(y, 1), rng.normal(y, 2), groups=groups, n_resamples=200)
    assert result["delong"] is None and result["n_patients"] == 40 and result["auc_difference"]["n_resamples"] == 200


def test_permutation_p_approaches_the_exact_mann_whitney_p():
    # Without ties, the share of labellings whose AUC reaches the observed one is the exact one-sided
    # Mann-Whitney p-value; 20,000 shuffles estimate it to about +-0.004.
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.75, 0.6, 0.55, 0.5, 0.45, 0.3, 0.2, 0.1])
    exact = mannwhitneyu(s[y == 1], s[y == 0], alternative="greater", method="exact").pvalue
    # The same by enumerating all C(10, 5) labellings, written out.
    observed = np.mean([a > b for a in s[y == 1] for b in s[y == 0]])
    labellings = [np.isin(np.arange(10), c) for c in itertools.combinations(range(10), 5)]
    reached = [np.mean([a > b for a in s[m] for b in s[~m]]) >= observed - 1e-12 for m in labellings]
    assert exact == pytest.approx(np.mean(reached))
    assert auc_permutation_p(y, s, n_permutations=20000, seed=0) == pytest.approx(exact, abs=0.012)


def test_permutation_p_is_never_zero_and_shuffles_patients():
    y = np.array([0] * 10 + [1] * 10)
    s = np.arange(20.0)
    assert auc_permutation_p(y, s, n_permutations=999) == pytest.approx(1 / 1000)
    with pytest.raises(ValueError, match="same label"):
        auc_permutation_p([0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], groups=["a", "a", "b", "b"])
    assert np.isnan(auc_permutation_p([1, 1], [0.2, 0.3]))
