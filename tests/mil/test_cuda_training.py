"""MIL training on a CUDA device: the same protocol as on the CPU, bf16 autocast, results on the host.

Skipped where no CUDA device is visible (CI); ``benchmarks/device/run_extract.sh`` runs them on
the GPU host. Devices differ in their float rounding, so the CPU and CUDA runs are compared by
what they learn, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil.cv import cross_validate
from wsi_pipeline.mil.train import TrainConfig, bag_outputs, fit_aggregator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SETTINGS = {"lr": 1e-3, "max_epochs": 30, "patience": 6, "hidden_dim": 32, "max_instances": 64}


def synthetic_mil(n_bags: int = 60, dim: int = 64, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Positive bags hide 15% of instances shifted along one direction; float16, as the store keeps them."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    bags, labels = {}, {}
    for i in range(n_bags):
        bag = rng.normal(size=(int(rng.integers(40, 120)), dim))
        if i % 2:
            bag[rng.choice(len(bag), size=max(1, len(bag) * 15 // 100), replace=False)] += 3.0 * direction
        bags[f"pt-{i:03d}"] = bag.astype(np.float16)
        labels[f"pt-{i:03d}"] = i % 2
    return bags, labels


def test_cross_validation_on_cuda_learns_what_the_cpu_learns():
    bags, labels = synthetic_mil()
    config = TrainConfig.from_model(ModelConfig(**SETTINGS))
    on_gpu = cross_validate(bags, labels, ["abmil"], n_folds=5, config=config, seed=0, device="cuda")
    on_cpu = cross_validate(bags, labels, ["abmil"], n_folds=5, config=config, seed=0, device="cpu")
    assert on_gpu["score"].dtype == np.float64 or on_gpu["score"].dtype == np.float32  # host numbers, not tensors
    assert on_gpu["fold"].tolist() == on_cpu["fold"].tolist()  # folds do not depend on the device
    gpu_auc = roc_auc_score(on_gpu["label"], on_gpu["score"])
    assert gpu_auc >= 0.9 and roc_auc_score(on_cpu["label"], on_cpu["score"]) >= 0.9
    assert spearmanr(on_gpu["score"], on_cpu["score"]).statistic > 0.8


def test_bf16_autocast_trains_and_keeps_float32_weights():
    bags, labels = synthetic_mil(seed=1)
    ids = sorted(bags)
    fit, val = ids[:40], ids[40:]
    amp = TrainConfig.from_model(ModelConfig(**SETTINGS, amp=True))
    plain = TrainConfig.from_model(ModelConfig(**SETTINGS, amp=False))
    model, history = fit_aggregator("abmil", bags, labels, fit, val, amp, seed=0, device="cuda")
    reference, _ = fit_aggregator("abmil", bags, labels, fit, val, plain, seed=0, device="cuda")
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in model.parameters())
    assert np.isfinite(history["val_loss"]).all()
    outputs = bag_outputs(model, bags, val).reshape(len(val), -1)[:, -1]
    assert roc_auc_score([labels[p] for p in val], outputs) >= 0.85
    # bf16 rounds the matrix products: the two trainings differ, a little.
    plain_outputs = bag_outputs(reference, bags, val).reshape(len(val), -1)[:, -1]
    assert not np.array_equal(outputs, plain_outputs)
    assert spearmanr(outputs, plain_outputs).statistic > 0.8
