"""Fold checkpoints: model.pt rebuilds the fold's model exactly, history.json records its training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.checkpoint import (
    HISTORY_FILE,
    MODEL_FILE,
    fold_folder,
    load_fold_model,
    save_fold_model,
)
from wsi_pipeline.mil.cv import train_fold
from wsi_pipeline.mil.fusion import mean_over_slides, slide_bags
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.mil.tasks import MulticlassTask
from wsi_pipeline.mil.train import TrainConfig, bag_outputs


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


IDS = [f"P{i:02d}" for i in range(24)]
PLAN = FoldPlan(fold=2, fit_ids=tuple(IDS[:14]), val_ids=tuple(IDS[14:18]), test_ids=tuple(IDS[18:]), repeat=1)


def tiny_bags(seed: int = 0, slides: int = 0):
    """24 patients x 5 instances x 8 features (float16, as the store keeps them), shifted by the label; or lists of slides."""
    rng = np.random.default_rng(seed)
    labels = {pid: i % 3 for i, pid in enumerate(IDS)}
    def bag(label):
        return (rng.normal(size=(5, 8)) * 2 + 3 + label).astype(np.float16)
    bags = {pid: [bag(labels[pid]) for _ in range(slides)] if slides else bag(labels[pid]) for pid in IDS}
    return bags, labels


def trained(aggregator: str, given, labels, task=None, **settings):
    config = TrainConfig.from_model(ModelConfig(max_epochs=3, patience=2, hidden_dim=8, **settings))
    rows = train_fold(PLAN, aggregator, given, labels, config, seed=4, task=task)
    return rows, config


@pytest.mark.parametrize(("aggregator", "standardise"), [("abmil", True), ("abmil", False), ("dsmil", True)])
def test_a_loaded_checkpoint_reproduces_the_folds_test_predictions_exactly(tmp_path, aggregator, standardise):
    bags, labels = tiny_bags()
    binary = {pid: int(label == 2) for pid, label in labels.items()}
    rows, config = trained(aggregator, bags, binary, standardise=standardise)
    history = rows.attrs["history"]
    folder = fold_folder(tmp_path, PLAN, aggregator)
    save_fold_model(folder, history["model"], history, aggregator=aggregator, plan=PLAN, config=config,
                    features_id="enc-123", device="cpu")

    model, info = load_fold_model(folder)

    assert folder == tmp_path / "training" / f"repeat1-fold2-{aggregator}"
    assert not model.training
    assert (info.aggregator, info.in_dim, info.n_outputs, info.features_id, info.repeat, info.fold) == (aggregator, 8, 1, "enc-123", 1, 2)
    assert info.params == history["aggregator_params"] and info.params.get("hidden_dim", 8) == 8
    assert (info.feature_stats is not None) == standardise
    predicted = info.task.predictions(bag_outputs(model, info.prepare(bags), PLAN.test_ids))
    np.testing.assert_array_equal(predicted["score"], rows["score"].to_numpy())
    # The weights are the trained fold's: a model trained otherwise (another lr) predicts otherwise.
    assert not np.array_equal(predicted["score"], trained(aggregator, bags, binary, standardise=standardise, lr=1e-2)[0]["score"])


def test_a_multiclass_late_fusion_checkpoint_keeps_the_tasks_classes_and_weights(tmp_path):
    bags, labels = tiny_bags(slides=2)
    task = MulticlassTask().bind({"patient_id": IDS, "label": [labels[p] for p in IDS]})
    rows, config = trained("meanpool", bags, labels, task=task, bags="patient-late")
    history = rows.attrs["history"]
    save_fold_model(tmp_path, history["model"], history, aggregator="meanpool", plan=PLAN, config=config, features_id=None, device="cpu")

    model, info = load_fold_model(tmp_path / MODEL_FILE)

    assert info.task.classes == ("0", "1", "2") and info.task.class_weights == history["task"].class_weights
    keys = history["test_keys"]
    raw = slide_bags(bags)  # each slide a bag, as the fold had them
    predicted = mean_over_slides(info.task.predictions(bag_outputs(model, info.prepare(raw), keys)), keys, PLAN.test_ids, info.task)
    for column in ("prob_0", "prob_1", "prob_2", "predicted"):
        np.testing.assert_array_equal(predicted[column], rows[column].to_numpy())


def test_history_json_records_the_curves_the_chosen_epoch_and_the_settings(tmp_path):
    bags, labels = tiny_bags()
    binary = {pid: int(label == 2) for pid, label in labels.items()}
    rows, config = trained("abmil", bags, binary, max_instances=3)
    history = rows.attrs["history"]
    save_fold_model(tmp_path, history["model"], history, aggregator="abmil", plan=PLAN, config=config, features_id="f", device="cpu")

    record = json.loads((tmp_path / HISTORY_FILE).read_text())

    def plain(values):  # an undefined score (NaN) is written as null
        return [None if isinstance(v, float) and math.isnan(v) else v for v in values]

    for curve in ("train_loss", "val_loss", "val_score"):
        assert record[curve] == plain(history[curve]) and len(record[curve]) == history["epochs_run"]
    assert record["best_epoch"] == history["best_epoch"] and record["epochs_run"] == history["epochs_run"]
    assert record["stop_reason"].startswith("early stopping" if history["stopped_early"] else "max_epochs (3) reached")
    assert record["settings"]["max_instances"] == 3 and record["settings"]["aggregator_params"] == {"hidden_dim": 8}
    assert (record["device"], record["features_id"], record["repeat"], record["fold"]) == ("cpu", "f", 1, 2)
    assert record["fitted_state"] == history["fitted_state"]
    import hashlib

    assert record["model_sha256"] == hashlib.sha256((tmp_path / MODEL_FILE).read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file behind


def test_loading_a_folder_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(WSIPipelineError, match="no model.pt") as error:
        load_fold_model(tmp_path)
    assert "training/" in error.value.fix
    torch.save({"format": 99}, tmp_path / MODEL_FILE)
    with pytest.raises(WSIPipelineError, match="format 1"):
        load_fold_model(tmp_path)


@pytest.mark.parametrize(
    "spec", [{"type": "regression"}, {"type": "survival", "loss": "discrete", "n_bins": 3}, {"type": "survival", "loss": "cox"}]
)
def test_every_task_type_is_rebuilt_fitted_from_its_checkpoint(tmp_path, spec):
    from wsi_pipeline.mil.tasks.registry import build_task

    bags, _ = tiny_bags()
    targets = {pid: float(i) if spec["type"] == "regression" else (float(i + 1), i % 2) for i, pid in enumerate(IDS)}
    rows, config = trained("abmil", bags, targets, task=build_task(spec))
    history = rows.attrs["history"]
    save_fold_model(tmp_path, history["model"], history, aggregator="abmil", plan=PLAN, config=config, features_id=None, device="cpu")

    model, info = load_fold_model(tmp_path)

    assert info.task.name == spec["type"] and info.task.fitted_state == history["fitted_state"]
    predicted = info.task.predictions(bag_outputs(model, info.prepare(bags), PLAN.test_ids))
    for column, values in predicted.items():
        np.testing.assert_array_equal(values, rows[column].to_numpy())
