"""Training and cross-validation for every task type: fitted tasks, mini-batches, determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from wsi_pipeline.config.workflow import ModelConfig, WorkflowPreset
from wsi_pipeline.mil import train as train_module
from wsi_pipeline.mil.cv import cross_validate, prediction_columns
from wsi_pipeline.mil.tasks import (
    MulticlassConfig,
    MulticlassTask,
    RegressionTask,
    SurvivalConfig,
    SurvivalTask,
)
from wsi_pipeline.mil.train import COMPARATIVE_LOSS_BATCH, TrainConfig, fit_aggregator


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**settings) -> TrainConfig:
    settings.setdefault("hidden_dim", 16)
    settings.setdefault("max_instances", 32)
    return TrainConfig.from_model(ModelConfig(**settings))


def latent_bags(n_bags: int = 24, dim: int = 12, seed: int = 0):
    """Bags whose share of shifted instances is a latent u in [0, 1]; returns bags and u."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    bags, latent = {}, {}
    for i in range(n_bags):
        u = (i + 0.5) / n_bags
        bag = rng.normal(size=(int(rng.integers(20, 50)), dim))
        shifted = rng.random(len(bag)) < 0.05 + 0.5 * u
        bag[shifted] += 2.5 * direction
        pid = f"p{i:02d}"
        bags[pid], latent[pid] = bag.astype(np.float16), u
    return bags, latent


def targets_for(kind: str, latent: dict[str, float]) -> dict:
    rng = np.random.default_rng(1)
    if kind == "multiclass":
        return {p: ["low", "mid", "high"][min(int(u * 3), 2)] for p, u in latent.items()}
    if kind == "regression":
        return {p: 10.0 * u + rng.normal(0, 0.3) for p, u in latent.items()}
    times = {p: float(rng.exponential(5.0 * math.exp(2.0 * u))) for p, u in latent.items()}
    return {p: (round(t, 2), int(i % 3 != 0)) for i, (p, t) in enumerate(times.items())}  # a third censored


TASKS = {
    "multiclass": lambda: MulticlassTask(MulticlassConfig()),
    "regression": lambda: RegressionTask(),
    "survival": lambda: SurvivalTask(),
    "survival-discrete": lambda: SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3)),
}


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_each_task_cross_validates_with_its_columns_and_is_deterministic_by_seed(kind):
    bags, latent = latent_bags()
    targets = targets_for(kind.split("-")[0], latent)
    settings = {"max_epochs": 3, "patience": 2}

    def run(seed):
        return cross_validate(bags, targets, ["abmil", "meanpool"], n_folds=2, config=config(**settings), seed=seed, task=TASKS[kind]())

    first, again = run(4), run(4)
    pd.testing.assert_frame_equal(first, again)  # two seeded CPU runs are identical
    histories, histories_again = first.attrs["histories"], again.attrs["histories"]
    assert [h["val_loss"] for h in histories.values()] == [h["val_loss"] for h in histories_again.values()]
    other = run(5)
    assert not first.equals(other)

    task = next(iter(histories.values()))["task"]
    assert list(first.columns) == list(prediction_columns(task))
    assert len(first) == 2 * len(bags) and not first.drop(columns=["predicted"], errors="ignore").isna().any().any()
    for history in histories.values():
        assert history["selection_metric"] == task.selection_metric
        assert np.isfinite(history["train_loss"]).all() and np.isfinite(history["val_loss"]).all()
        assert type(history["task"]).__name__ == type(task).__name__ and history["task"].is_fitted


def test_a_task_is_fitted_on_the_fit_patients_only():
    bags, latent = latent_bags()
    targets = targets_for("regression", latent)
    ids = list(bags)
    fit_ids, val_ids = ids[:16], ids[16:]
    _, history = fit_aggregator("meanpool", bags, targets, fit_ids, val_ids, config(max_epochs=1), seed=0, task=RegressionTask())
    fit_values = np.array([targets[p] for p in fit_ids])
    assert history["fitted_state"] == {"mean": pytest.approx(fit_values.mean()), "std": pytest.approx(fit_values.std())}


def test_cox_trains_on_mini_batches_of_bags_and_other_tasks_on_single_bags(monkeypatch):
    bags, latent = latent_bags(n_bags=40)
    targets = targets_for("survival", latent)
    ids = list(bags)
    fit_ids, val_ids = ids[:30], ids[30:]
    sizes = []
    original = SurvivalTask.loss

    def recording(self, outputs, targets):
        if torch.is_grad_enabled() and outputs.requires_grad:
            sizes.append(outputs.shape[0])
        return original(self, outputs, targets)

    monkeypatch.setattr(SurvivalTask, "loss", recording)
    _, history = fit_aggregator("abmil", bags, targets, fit_ids, val_ids, config(max_epochs=2, patience=2), seed=0, task=SurvivalTask())
    assert history["bags_per_step"] == COMPARATIVE_LOSS_BATCH == 16
    # 30 fit bags in steps of at most 16, cut evenly: 15 + 15 per epoch, never a lone bag.
    assert sizes == [15, 15, 15, 15]
    assert all(value != 0.0 for value in history["train_loss"])

    sizes.clear()
    _, history = fit_aggregator("abmil", bags, targets, fit_ids, val_ids, config(max_epochs=1, batch_bags=8), seed=0, task=SurvivalTask())
    assert history["bags_per_step"] == 8 and sizes == [8, 8, 7, 7]
    discrete = SurvivalTask(SurvivalConfig(loss="discrete", n_bins=3))
    assert config().bags_per_step(discrete) == 1 and config().bags_per_step(RegressionTask()) == 1


def test_a_padded_mini_batch_gives_the_loss_of_its_bags_forwarded_one_by_one():
    """Padding never changes a bag's output: the batched Cox loss equals the loss of the outputs bag by bag."""
    bags, latent = latent_bags(n_bags=6)
    targets = targets_for("survival", latent)
    ids = list(bags)
    task = SurvivalTask()
    batch, mask = train_module._batch([bags[p] for p in ids], torch.device("cpu"))
    assert batch.shape[0] == 6 and mask.sum().item() == sum(len(bags[p]) for p in ids)
    model = train_module.build_aggregator("abmil", 12, 1, hidden_dim=8, dropout=0.0).eval()
    y = torch.tensor([targets[p] for p in ids], dtype=torch.float32)
    with torch.no_grad():
        batched = task.loss(model(batch, mask)[0], y)
        single = torch.cat([model(*train_module._one_bag(bags[p], torch.device("cpu")))[0] for p in ids])
        one_by_one = task.loss(single, y)
    assert batched.item() == pytest.approx(one_by_one.item(), abs=1e-5) and batched.item() > 0


def test_steps_cut_a_shuffled_order_evenly():
    order = train_module.epoch_order(np.zeros(10), "shuffle", torch.Generator().manual_seed(0))
    steps = train_module._steps(order, 4)
    assert [len(s) for s in steps] == [4, 3, 3] and [i for s in steps for i in s] == order
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert [len(s) for s in train_module._steps(order[:5], 1)] == [1] * 5


def test_a_cox_workflow_refuses_one_bag_per_step_and_clam_needs_class_targets():
    with pytest.raises(ValueError, match="batch_bags is 1"):
        WorkflowPreset(name="x", task={"type": "survival"}, model={"batch_bags": 1})
    WorkflowPreset(name="x", task={"type": "survival", "loss": "discrete"}, model={"batch_bags": 1})
    with pytest.raises(ValueError, match="clam-sb.*class targets"):
        WorkflowPreset(name="x", task={"type": "regression"}, model={"aggregators": ["clam-sb", "abmil"]})
    WorkflowPreset(name="x", task={"type": "multiclass"}, model={"aggregators": ["clam-mb"]})
