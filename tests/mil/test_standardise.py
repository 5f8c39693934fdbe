"""Instance features standardised with the fit patients' statistics only."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil import cv, standardise
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.mil.standardise import clear_stats_memo, fit_stats, standardised
from wsi_pipeline.mil.train import TrainConfig


def test_statistics_are_those_of_the_fit_instances_computed_by_hand():
    bags = {
        "a": np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float16),
        "b": np.array([[5.0, 5.0]], dtype=np.float16),
        "test": np.array([[1000.0, -1000.0]], dtype=np.float16),
    }
    stats = fit_stats(bags, ["a", "b"])
    np.testing.assert_allclose(stats.mean, [3.0, 5.0])
    np.testing.assert_allclose(stats.std, [np.sqrt(8 / 3), 1.0])  # the constant feature is only centred
    view = standardised(bags, ["a", "b"])
    np.testing.assert_allclose(view["a"], [[-2 / np.sqrt(8 / 3), 0.0], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(view["test"], [[997 / np.sqrt(8 / 3), -1005.0]], rtol=1e-3)
    assert view["a"].dtype == np.float32 and set(view) == set(bags) and bags["a"].dtype == np.float16  # not copied


def test_on_by_default_in_a_workflow_and_off_when_asked():
    assert TrainConfig.from_model(ModelConfig()).standardise
    assert not TrainConfig.from_model(ModelConfig(standardise=False)).standardise


@pytest.mark.parametrize("standardise", [True, False])
def test_train_fold_takes_statistics_from_fit_patients_only(monkeypatch, standardise):
    rng = np.random.default_rng(0)
    ids = [f"P{i}" for i in range(8)]
    bags = {pid: rng.normal(size=(5, 4)).astype(np.float32) + (3.0 if i % 2 else 0.0) for i, pid in enumerate(ids)}
    labels = {pid: i % 2 for i, pid in enumerate(ids)}
    plan = FoldPlan(fold=0, fit_ids=tuple(ids[:4]), val_ids=tuple(ids[4:6]), test_ids=tuple(ids[6:]))
    seen = []
    original = cv.standardised

    def spy(bags, fit_ids, **options):
        seen.append(tuple(fit_ids))
        return original(bags, fit_ids, **options)

    monkeypatch.setattr(cv, "standardised", spy)
    config = TrainConfig.from_model(ModelConfig(max_epochs=1, patience=1, hidden_dim=8, standardise=standardise))
    rows = cv.train_fold(plan, "meanpool", bags, labels, config, seed=0)
    assert seen == ([plan.fit_ids] if standardise else [])
    assert list(rows["patient_id"]) == list(plan.test_ids) and np.isfinite(rows["score"]).all()


def test_statistics_stay_exact_for_a_feature_whose_mean_dwarfs_its_spread():
    """Float32 sums of shifted rows, float64 across bags: as numpy's two-pass float64 statistics."""
    rng = np.random.default_rng(3)
    bags = {f"b{i}": np.stack([rng.normal(1000.0, 0.05, 3000), rng.normal(0.0, 1.0, 3000)], axis=1).astype(np.float32)
            for i in range(4)}
    stacked = np.concatenate(list(bags.values())).astype(np.float64)
    stats = fit_stats(bags, list(bags))
    np.testing.assert_allclose(stats.mean, stacked.mean(axis=0), rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(stats.std, stacked.std(axis=0), rtol=1e-4)


def test_statistics_of_named_bag_data_are_taken_once_per_fit_set(monkeypatch):
    rng = np.random.default_rng(1)
    bags = {f"P{i}": rng.normal(3.0, 2.0, size=(7 + i, 5)).astype(np.float16) for i in range(6)}
    taken = []

    def counted(bags, ids):
        taken.append(tuple(ids))
        return fit_stats(bags, ids)

    monkeypatch.setattr(standardise, "fit_stats", counted)
    clear_stats_memo()
    fit = ("P0", "P1", "P2")
    first = standardised(bags, fit, data_key="cohort-a")
    second = standardised(bags, list(fit), data_key="cohort-a")
    assert second.stats is first.stats and taken == [fit]  # the second aggregator of the fold reuses them
    # Exactly what taking them again gives: the memo changes nothing but the time.
    unnamed = standardised(bags, fit)
    np.testing.assert_array_equal(unnamed.stats.mean, first.stats.mean)
    np.testing.assert_array_equal(unnamed.stats.std, first.stats.std)
    assert len(taken) == 2  # without a data key, always taken
    # Other fit keys, or other data under the same ids, are other statistics.
    other_fit = standardised(bags, ("P3", "P4"), data_key="cohort-a")
    other_data = standardised({k: v * 2 for k, v in bags.items()}, fit, data_key="cohort-b")
    assert len(taken) == 4
    assert not np.allclose(other_fit.stats.mean, first.stats.mean)
    np.testing.assert_allclose(other_data.stats.std, 2 * first.stats.std, rtol=1e-3)
    clear_stats_memo()
    standardised(bags, fit, data_key="cohort-a")
    assert len(taken) == 5
