"""The optimiser's protocol: learning-rate schedule, class-balanced sampling, gradient accumulation, AMP."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from wsi_pipeline.config.workflow import ModelConfig, WorkflowPreset
from wsi_pipeline.mil import train as train_module
from wsi_pipeline.mil.train import TrainConfig, epoch_order, fit_aggregator, lr_factor


def toy_bags(n: int = 12, dim: int = 6, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(seed)
    labels = {f"p{i:02d}": int(i % 3 == 0) for i in range(n)}
    bags = {p: rng.normal(size=(5 + i % 4, dim)).astype(np.float32) + y for i, (p, y) in enumerate(labels.items())}
    return bags, labels


def config(**settings) -> TrainConfig:
    base = {"max_epochs": 4, "patience": 10, "hidden_dim": 8, "dropout": 0.0, "max_instances": None, "lr": 1e-2}
    return TrainConfig.from_model(ModelConfig(**{**base, **settings}))


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    factors = [lr_factor(step, total_steps=10, warmup_steps=2, schedule="cosine") for step in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a > b for a, b in itertools.pairwise(factors[2:]))
    assert lr_factor(5, 10, 2, "constant") == 1.0


def test_the_schedule_is_applied_per_optimiser_step_and_recorded_per_epoch():
    bags, labels = toy_bags()
    ids = list(bags)
    _, cosine = fit_aggregator("meanpool", bags, labels, ids[:8], ids[8:], config(lr_schedule="cosine"), seed=0)
    _, constant = fit_aggregator("meanpool", bags, labels, ids[:8], ids[8:], config(lr_schedule="constant"), seed=0)
    # 8 fit bags, one per step: epoch e starts at step 8e of 32 (no warm-up).
    assert cosine["lr"] == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert constant["lr"] == [1e-2] * 4
    assert cosine["val_loss"] != constant["val_loss"]


def test_balanced_sampling_draws_each_class_equally_often():
    strata = np.array([0] * 90 + [1] * 10)
    generator = torch.Generator().manual_seed(0)
    draws = np.concatenate([epoch_order(strata, "balanced", generator) for _ in range(50)])
    share = (strata[draws] == 1).mean()
    assert len(draws) == 5000 and share == pytest.approx(0.5, abs=0.03)  # shuffled: 0.10
    shuffled = epoch_order(strata, "shuffle", torch.Generator().manual_seed(0))
    assert sorted(shuffled) == list(range(100))


def test_gradient_accumulation_over_single_bags_equals_one_step_on_their_batch():
    """Two one-bag steps at loss/2 give the gradient of one step on both bags: the same training."""
    bags, labels = toy_bags(n=12)
    ids = list(bags)
    common = {"lr_schedule": "constant"}
    accumulated = replace(config(**common, grad_accumulation=2), batch_bags=1)
    batched = replace(config(**common), batch_bags=2)
    model_a, a = fit_aggregator("abmil", bags, labels, ids[:8], ids[8:], accumulated, seed=1)
    model_b, b = fit_aggregator("abmil", bags, labels, ids[:8], ids[8:], batched, seed=1)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # Outputs, not every weight: the attention's last bias gets a zero gradient (softmax is
    # shift-invariant), whose rounding noise Adam's normalisation turns into different steps.
    np.testing.assert_allclose(
        train_module.bag_outputs(model_a, bags, ids), train_module.bag_outputs(model_b, bags, ids), rtol=1e-4, atol=1e-5
    )
    _, single = fit_aggregator("abmil", bags, labels, ids[:8], ids[8:], replace(config(**common), batch_bags=1), seed=1)
    assert single["val_loss"] != pytest.approx(a["val_loss"], rel=1e-5)  # accumulation did change the steps


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_only_on_cuda():
    assert isinstance(train_module._autocast(torch.device("cpu"), True), type(train_module.nullcontext()))
    cuda = train_module._autocast(torch.device("cuda"), True)
    assert isinstance(cuda, torch.autocast) and cuda.fast_dtype == torch.bfloat16
    assert isinstance(train_module._autocast(torch.device("cuda"), False), type(train_module.nullcontext()))


def test_balanced_sampling_needs_classes_and_replaces_the_weighted_loss():
    with pytest.raises(ValueError, match="set task.balanced: false"):
        WorkflowPreset(name="x", model={"sampling": "balanced"})
    with pytest.raises(ValueError, match="regression task has no classes"):
        WorkflowPreset(name="x", task={"type": "regression"}, model={"sampling": "balanced"})
    preset = WorkflowPreset(name="x", task={"type": "binary", "balanced": False}, model={"sampling": "balanced"})
    assert TrainConfig.from_model(preset.model).sampling == "balanced"
    with pytest.raises(ValueError, match="lr_schedule"):
        ModelConfig(lr_schedule="step")


def test_batches_are_prepared_one_ahead_on_a_thread_in_order():
    """The next batch is made while the current one is used; draws from a generator keep their order."""
    import threading

    made = {i: threading.Event() for i in range(4)}
    threads, generator = [], torch.Generator().manual_seed(0)

    def produce(index):
        threads.append(threading.current_thread().name)
        made[index].set()
        return index, torch.randint(0, 10**6, (1,), generator=generator).item()

    got = []
    for index, value in train_module.ahead(produce, 4):
        if index < 3:  # batch index + 1 gets made while this one is still in use
            assert made[index + 1].wait(timeout=10)
        got.append(value)
    reference = torch.Generator().manual_seed(0)
    assert got == [torch.randint(0, 10**6, (1,), generator=reference).item() for _ in range(4)]
    assert len(threads) == 4 and all(name.startswith("bag-prepare") for name in threads)
    assert list(train_module.ahead(produce, 0)) == []
