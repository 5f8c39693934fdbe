"""Late fusion: slides as bags, folds by patient, a patient's prediction the mean over their slides."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil import cv
from wsi_pipeline.mil.fusion import mean_over_slides, slide_bags, slides_of
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.mil.train import TrainConfig


def test_slide_keys_and_means_by_hand():
    bags = slide_bags({"A": [np.zeros((2, 3)), np.ones((1, 3))], "B": np.ones((4, 3))})
    assert slides_of(bags, ["B", "A", "C"]) == ("B\x1f0", "A\x1f0", "A\x1f1")
    means = mean_over_slides({"score": np.array([0.2, 0.4, 0.9])}, ["A\x1f0", "A\x1f1", "B\x1f0"], ["B", "A"], task=None)
    np.testing.assert_allclose(means["score"], [0.9, 0.3])


def test_multiclass_late_prediction_is_the_class_of_the_highest_mean_probability():
    task = SimpleNamespace(classes=["x", "y"])  # what mean_over_slides reads of a bound multiclass task
    columns = {"prob_x": np.array([0.9, 0.2]), "prob_y": np.array([0.1, 0.8]), "predicted": np.array(["x", "y"], dtype=object)}
    means = mean_over_slides(columns, ["A\x1f0", "A\x1f1"], ["A"], task)
    np.testing.assert_allclose(means["prob_x"], [0.55])
    assert list(means["predicted"]) == ["x"]


@pytest.mark.parametrize("mode", ["patient-early", "patient-late"])
def test_train_fold_late_fusion_averages_slide_predictions(monkeypatch, mode):
    rng = np.random.default_rng(0)
    ids = [f"P{i}" for i in range(8)]
    bags = {pid: [rng.normal(size=(4, 3)).astype(np.float32) + i % 2 for _ in range(2)] for i, pid in enumerate(ids)}
    labels = {pid: i % 2 for i, pid in enumerate(ids)}
    plan = FoldPlan(fold=0, fit_ids=tuple(ids[:4]), val_ids=tuple(ids[4:6]), test_ids=tuple(ids[6:]))
    seen = {}
    original = cv.predict_bags

    def spy(model, bags, ids, task):
        seen["ids"], seen["columns"] = tuple(ids), original(model, bags, ids, task)
        return seen["columns"]

    monkeypatch.setattr(cv, "predict_bags", spy)
    config = TrainConfig.from_model(ModelConfig(max_epochs=1, patience=1, hidden_dim=8, bags=mode))
    given = bags if mode == "patient-late" else {pid: np.concatenate(parts) for pid, parts in bags.items()}
    rows = cv.train_fold(plan, "meanpool", given, labels, config, seed=0)
    assert list(rows["patient_id"]) == ["P6", "P7"]
    if mode == "patient-late":
        assert seen["ids"] == ("P6\x1f0", "P6\x1f1", "P7\x1f0", "P7\x1f1")
        np.testing.assert_allclose(rows["score"], seen["columns"]["score"].reshape(2, 2).mean(axis=1))
    else:
        assert seen["ids"] == ("P6", "P7")
