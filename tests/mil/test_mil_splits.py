"""Fold plans: patient-level, stratified, leak-free, reproducible."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, assert_disjoint, plan_folds


def cohort(n_pos: int, n_neg: int) -> tuple[list[str], list[int]]:
    ids = [f"pt-{i:03d}" for i in range(n_pos + n_neg)]
    labels = [1] * n_pos + [0] * n_neg
    return ids, labels


COHORTS = [(20, 20, 5, 0), (12, 48, 5, 1), (5, 35, 5, 2), (4, 4, 2, 3), (30, 70, 10, 4)]


@pytest.mark.parametrize(("n_pos", "n_neg", "n_folds", "seed"), COHORTS)
def test_every_patient_is_tested_exactly_once(n_pos, n_neg, n_folds, seed):
    ids, labels = cohort(n_pos, n_neg)
    plans = plan_folds(ids, labels, n_folds=n_folds, seed=seed)
    assert [p.fold for p in plans] == list(range(n_folds))
    tested = Counter(pid for plan in plans for pid in plan.test_ids)
    assert set(tested) == set(ids)
    assert set(tested.values()) == {1}


@pytest.mark.parametrize(("n_pos", "n_neg", "n_folds", "seed"), COHORTS)
def test_fit_and_val_come_only_from_the_training_patients(n_pos, n_neg, n_folds, seed):
    ids, labels = cohort(n_pos, n_neg)
    for plan in plan_folds(ids, labels, n_folds=n_folds, seed=seed):
        fit, val, test = set(plan.fit_ids), set(plan.val_ids), set(plan.test_ids)
        assert not fit & val and not fit & test and not val & test
        # The training patients of the fold are exactly everyone not tested in it.
        assert fit | val == set(ids) - test
        assert len(plan.fit_ids) == len(fit) and len(plan.val_ids) == len(val)


@pytest.mark.parametrize(("n_pos", "n_neg", "n_folds", "seed"), COHORTS)
def test_test_and_val_sets_are_stratified(n_pos, n_neg, n_folds, seed):
    ids, labels = cohort(n_pos, n_neg)
    label_of = dict(zip(ids, labels))
    for plan in plan_folds(ids, labels, n_folds=n_folds, seed=seed):
        test_pos = sum(label_of[p] for p in plan.test_ids)
        assert 0 < test_pos < len(plan.test_ids), "each test fold needs both classes"
        # Stratified: the fold's share of positives is the balanced one, within one patient.
        assert abs(test_pos - n_pos / n_folds) < 1
        val_labels = {label_of[p] for p in plan.val_ids}
        fit_labels = {label_of[p] for p in plan.fit_ids}
        assert val_labels == {0, 1} and fit_labels == {0, 1}


def test_val_fraction_sets_the_size_of_the_inner_validation_set():
    ids, labels = cohort(50, 50)
    for plan in plan_folds(ids, labels, n_folds=5, val_fraction=0.25):
        assert len(plan.val_ids) == 20  # 25% of 40 positives + 25% of 40 negatives


def test_plans_are_deterministic_by_seed():
    ids, labels = cohort(15, 25)
    assert plan_folds(ids, labels, seed=7) == plan_folds(ids, labels, seed=7)
    assert plan_folds(ids, labels, seed=7) != plan_folds(ids, labels, seed=8)


def test_too_few_positives_for_the_fold_count_is_a_user_error():
    ids, labels = cohort(3, 40)
    with pytest.raises(WSIPipelineError) as caught:
        plan_folds(ids, labels, n_folds=5)
    message = str(caught.value)
    assert "only 3 patient(s) with label 1" in message
    assert "at least 5" in message
    assert "n_folds" in message and "fix" in message


def test_two_folds_need_four_patients_per_class_for_the_inner_split():
    ids, labels = cohort(3, 10)
    with pytest.raises(WSIPipelineError, match="at least 4"):
        plan_folds(ids, labels, n_folds=2)
    plan_folds(ids, labels, n_folds=3)  # three folds leave two positives in training


def test_single_class_and_duplicate_ids_are_user_errors():
    with pytest.raises(WSIPipelineError, match="both classes"):
        plan_folds(*cohort(0, 20))
    ids, labels = cohort(10, 10)
    ids[3] = ids[4]
    with pytest.raises(WSIPipelineError, match="more than once"):
        plan_folds(ids, labels)


@pytest.mark.parametrize("setting", [{"n_folds": 1}, {"val_fraction": 0.0}, {"val_fraction": 1.0}, {"seed": -1}])
def test_bad_settings_are_user_errors(setting):
    with pytest.raises(WSIPipelineError):
        plan_folds(*cohort(20, 20), **setting)


def test_assert_disjoint_names_the_shared_patients():
    assert_disjoint(["a", "b"], ["c"], "ok")
    with pytest.raises(RuntimeError, match="fold 0 test vs fit.*b"):
        assert_disjoint(["a", "b"], ["b", "c"], "fold 0 test vs fit")
    assert issubclass(LeakageError, RuntimeError)


def test_fold_plan_is_immutable():
    plan = FoldPlan(fold=0, fit_ids=("a",), val_ids=("b",), test_ids=("c",))
    with pytest.raises(AttributeError):
        plan.fold = 1  # type: ignore[misc]


# -- repeated cross-validation --------------------------------------------------------------


@pytest.mark.parametrize(("n_folds", "n_repeats", "seed"), [(2, 3, 0), (5, 4, 11), (3, 2, 7)])
def test_folds_across_repeats_never_leak(n_folds, n_repeats, seed):
    ids, labels = cohort(14, 26)
    plans = plan_folds(ids, labels, n_folds=n_folds, n_repeats=n_repeats, seed=seed)
    assert [(p.repeat, p.fold) for p in plans] == [(r, f) for r in range(n_repeats) for f in range(n_folds)]
    for repeat in range(n_repeats):
        folds = [p for p in plans if p.repeat == repeat]
        tested = [pid for p in folds for pid in p.test_ids]
        assert sorted(tested) == sorted(ids)  # every patient tested exactly once per repeat
        for plan in folds:
            assert not set(plan.test_ids) & (set(plan.fit_ids) | set(plan.val_ids))
            assert not set(plan.fit_ids) & set(plan.val_ids)
            assert set(plan.fit_ids) | set(plan.val_ids) | set(plan.test_ids) == set(ids)
    tests = {r: sorted(tuple(p.test_ids) for p in plans if p.repeat == r) for r in range(n_repeats)}
    assert len({tuple(t) for t in tests.values()}) == n_repeats  # each repeat shuffles differently


def test_the_first_repeat_is_the_single_cross_validation():
    ids, labels = cohort(12, 20)
    single = plan_folds(ids, labels, n_folds=4, seed=3)
    repeated = plan_folds(ids, labels, n_folds=4, seed=3, n_repeats=3)
    assert repeated[:4] == single
    assert [p.name for p in repeated[3:6]] == ["fold3", "repeat1-fold0", "repeat1-fold1"]


def test_a_leaking_repeat_is_caught():
    from wsi_pipeline.mil.splits import _verify

    ids, labels = cohort(10, 10)
    plans = plan_folds(ids, labels, n_folds=2, n_repeats=2)
    _verify(plans, ids)
    bad = plans[3]  # repeat 1, fold 1: test a patient it also fits on
    leaky = FoldPlan(bad.fold, bad.fit_ids, bad.val_ids, bad.test_ids + bad.fit_ids[:1], repeat=1)
    with pytest.raises(LeakageError, match="repeat 1"):
        _verify([*plans[:3], leaky], ids)
    twice = FoldPlan(1, plans[2].fit_ids, plans[2].val_ids, plans[2].test_ids, repeat=1)  # fold 0's tests again
    with pytest.raises(LeakageError, match="repeat 1: patient"):
        _verify([*plans[:3], twice], ids)


def test_site_stratification_spreads_every_site_over_the_test_folds():
    ids = [f"p{i:02d}" for i in range(40)]
    labels = [i % 2 for i in range(40)]
    sites = ["A" if i < 20 else "B" for i in range(40)]  # two sites, each with both labels
    plans = plan_folds(ids, labels, n_folds=4, seed=1, n_repeats=2, sites=sites)
    site_of = dict(zip(ids, sites))
    for plan in plans:
        counts = pd.Series([site_of[p] for p in plan.test_ids]).value_counts()
        assert counts.to_dict() == {"A": 5, "B": 5}, (plan.name, counts.to_dict())


def test_one_stratum_is_a_shuffled_k_fold_when_allowed():
    ids = [f"p{i}" for i in range(9)]
    with pytest.raises(WSIPipelineError, match="both classes"):
        plan_folds(ids, [0] * 9, n_folds=3)
    plans = plan_folds(ids, [0] * 9, n_folds=3, single_stratum_ok=True)
    assert sorted(p for plan in plans for p in plan.test_ids) == sorted(ids)
