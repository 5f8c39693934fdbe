"""Nested CV over model.grid: inner folds inside the outer training patients, the argmin chosen, one point = no grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil import nested
from wsi_pipeline.mil.cv import train_fold
from wsi_pipeline.mil.nested import inner_plans, nested_train_fold, point_config
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, plan_folds
from wsi_pipeline.mil.tasks import BinaryTask
from wsi_pipeline.mil.train import TrainConfig


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


IDS = [f"P{i:02d}" for i in range(24)]
LABELS = {pid: i % 2 for i, pid in enumerate(IDS)}


def tiny_bags(seed: int = 0):
    """24 patients x 5 instances x 8 features; label-1 bags shifted."""
    rng = np.random.default_rng(seed)
    return {pid: (rng.normal(size=(5, 8)) + 0.8 * LABELS[pid]).astype(np.float16) for pid in IDS}


def outer_plans(n_repeats: int = 2):
    return plan_folds(IDS, [LABELS[p] for p in IDS], n_folds=3, seed=11, n_repeats=n_repeats)


def test_no_outer_test_patient_enters_any_inner_fold_of_any_repeat_or_fold():
    plans = outer_plans()
    assert len(plans) == 6
    for plan in plans:
        inner = inner_plans(plan, BinaryTask(), LABELS, inner_folds=3, val_fraction=0.2, seed=11)
        assert len(inner) == 3
        training = set(plan.fit_ids) | set(plan.val_ids)
        for fold in inner:
            assert not set(fold.fit_ids + fold.val_ids + fold.test_ids) & set(plan.test_ids)
            assert set(fold.patients) == training  # the outer training patients, each in one role
        # Every outer training patient is an inner test patient exactly once.
        tested = [p for fold in inner for p in fold.test_ids]
        assert sorted(tested) == sorted(training)
    # The inner split is the fold's own: two outer folds get different inner folds.
    first, second = (inner_plans(p, BinaryTask(), LABELS, 3, 0.2, 11)[0].test_ids for p in plans[:2])
    assert first != second


def test_a_plan_whose_test_patients_leak_into_training_is_refused():
    plan = outer_plans(1)[0]
    leaky = FoldPlan(plan.fold, plan.fit_ids, plan.val_ids, plan.test_ids + plan.fit_ids[:1])
    with pytest.raises(LeakageError, match="outer test patients"):
        inner_plans(leaky, BinaryTask(), LABELS, 3, 0.2, 11)


def test_too_few_training_patients_for_the_inner_folds_is_a_user_error_naming_the_setting():
    from wsi_pipeline.errors import WSIPipelineError

    plan = outer_plans(1)[0]
    with pytest.raises(WSIPipelineError) as error:
        inner_plans(plan, BinaryTask(), LABELS, inner_folds=9, val_fraction=0.2, seed=11)
    assert error.value.where == "validation.inner_folds" and "inner_folds" in error.value.fix


def test_the_chosen_point_is_the_argmin_of_the_recorded_inner_scores(monkeypatch):
    bags, plan = tiny_bags(), outer_plans(1)[1]
    model = ModelConfig(aggregators=["meanpool"], max_epochs=2, patience=2, hidden_dim=8, grid={"lr": [1e-4, 3e-2, 1e-3]})
    trained_lrs = []
    original = nested.train_fold

    def spy(fold_plan, aggregator, given, targets, config, seed, **kwargs):
        trained_lrs.append((fold_plan.test_ids == plan.test_ids, config.lr))
        return original(fold_plan, aggregator, given, targets, config, seed, **kwargs)

    monkeypatch.setattr(nested, "train_fold", spy)
    rows = nested_train_fold(plan, "meanpool", bags, LABELS, model, seed=2, inner_folds=2, val_fraction=0.25)

    search = rows.attrs["history"]["grid_search"]
    assert search["points"] == [{"lr": 1e-4}, {"lr": 3e-2}, {"lr": 1e-3}]
    assert len(search["inner_losses"]) == 3 and all(len(losses) == 2 for losses in search["inner_losses"])
    np.testing.assert_allclose(search["scores"], np.mean(search["inner_losses"], axis=1))
    assert len(set(search["scores"])) == 3  # the learning rates do differ in their inner losses
    assert search["chosen_index"] == int(np.argmin(search["scores"])) and search["chosen"] == search["points"][search["chosen_index"]]
    # 3 points x 2 inner folds on inner patients only, then the chosen point once on the outer fold.
    assert [outer for outer, _ in trained_lrs] == [False] * 6 + [True]
    assert trained_lrs[-1][1] == search["chosen"]["lr"]
    assert list(rows["patient_id"]) == list(plan.test_ids)


def test_ties_go_to_the_first_point_in_grid_order(monkeypatch):
    monkeypatch.setattr(nested, "inner_loss", lambda rows, targets: 0.5)
    plan = outer_plans(1)[0]
    model = ModelConfig(aggregators=["meanpool"], max_epochs=1, patience=1, grid={"weight_decay": [1e-2, 0.0]})
    rows = nested_train_fold(plan, "meanpool", tiny_bags(), LABELS, model, seed=0, inner_folds=2, val_fraction=0.25)
    assert rows.attrs["history"]["grid_search"]["chosen_index"] == 0


@pytest.mark.parametrize("setting", [{"lr": 1e-3}, {"hidden_dim": 4}])
def test_a_grid_of_one_point_predicts_as_training_with_that_setting(setting):
    bags, plan = tiny_bags(), outer_plans(1)[2]
    key, value = next(iter(setting.items()))
    grid_model = ModelConfig(aggregators=["abmil"], max_epochs=3, patience=2, grid={key: [value]})
    plain_model = ModelConfig(aggregators=["abmil"], max_epochs=3, patience=2, **setting)

    with_grid = nested_train_fold(plan, "abmil", bags, LABELS, grid_model, seed=3, inner_folds=2, val_fraction=0.25)
    without = train_fold(plan, "abmil", bags, LABELS, TrainConfig.from_model(plain_model), seed=3)

    np.testing.assert_array_equal(with_grid["score"].to_numpy(), without["score"].to_numpy())
    assert with_grid.attrs["history"]["aggregator_params"] == without.attrs["history"]["aggregator_params"]


def test_grid_points_apply_hidden_dim_and_dropout_as_the_model_section_does():
    model = ModelConfig(aggregators=["abmil", "meanpool"], lr=1e-3, grid={"dropout": [0.0, 0.5], "max_instances": [4, None]})
    base = TrainConfig.from_model(model)
    config = point_config(base, model, "abmil", {"dropout": 0.5, "max_instances": None})
    assert config.params_for("abmil")["dropout"] == 0.5 and config.max_instances is None and config.lr == 1e-3
    assert config.params_for("meanpool") == base.params_for("meanpool")  # only the fold's aggregator changes
    assert base.params_for("abmil") == {} and base.max_instances == 512  # the base is left as it was


def test_a_point_that_changes_nothing_for_the_aggregator_is_not_trained_twice(monkeypatch):
    calls = []
    original = nested.train_fold
    monkeypatch.setattr(nested, "train_fold", lambda *args, **kwargs: calls.append(args[4]) or original(*args, **kwargs))
    plan = outer_plans(1)[0]
    # linear-probe has no dropout setting: the two dropout values train the same model.
    model = ModelConfig(aggregators=["linear-probe"], max_epochs=1, patience=1, grid={"dropout": [0.1, 0.3], "lr": [1e-3, 1e-2]})
    rows = nested_train_fold(plan, "linear-probe", tiny_bags(), LABELS, model, seed=0, inner_folds=2, val_fraction=0.25)
    search = rows.attrs["history"]["grid_search"]
    assert search["same_as"] == [None, None, 0, 1]
    assert search["inner_losses"][2] == search["inner_losses"][0] and search["inner_losses"][3] == search["inner_losses"][1]
    assert len(calls) == 2 * 2 + 1  # two distinct points x two inner folds, then the outer fold


def test_a_point_that_fails_to_train_is_never_chosen_and_all_failing_fails_the_fold(monkeypatch):
    from wsi_pipeline.errors import WSIPipelineError

    original = nested.train_fold

    def diverging(fold_plan, aggregator, given, targets, config, seed, **kwargs):
        if config.lr > 1e-2:
            raise WSIPipelineError("training diverged at epoch 0", where=f"aggregator {aggregator}", fix="lower model.lr")
        return original(fold_plan, aggregator, given, targets, config, seed, **kwargs)

    monkeypatch.setattr(nested, "train_fold", diverging)
    plan = outer_plans(1)[0]
    model = ModelConfig(aggregators=["meanpool"], max_epochs=1, patience=1, hidden_dim=8, grid={"lr": [0.5, 1e-3]})
    search = nested_train_fold(plan, "meanpool", tiny_bags(), LABELS, model, seed=0, inner_folds=2, val_fraction=0.25).attrs["history"]["grid_search"]
    assert search["scores"][0] == float("inf") and "diverged" in search["errors"][0] and search["errors"][1] is None
    assert search["chosen"] == {"lr": 1e-3}
    with pytest.raises(WSIPipelineError, match="every grid point failed to train; the first: aggregator meanpool: training diverged"):
        nested_train_fold(plan, "meanpool", tiny_bags(), LABELS, model.model_copy(update={"grid": {"lr": [0.5, 0.9]}}), seed=0,
                          inner_folds=2, val_fraction=0.25)
