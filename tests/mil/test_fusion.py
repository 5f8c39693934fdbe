"""Slides as bags, folds by patient: late fusion (a patient's prediction the mean over their slides) and slide-level rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil import cv
from wsi_pipeline.mil.cohort_bags import load_bags
from wsi_pipeline.mil.external_bags import load_instance_table
from wsi_pipeline.mil.fusion import mean_over_slides, slide_bags, slide_ids, slides_of
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.mil.tasks import (
    MulticlassConfig,
    MulticlassTask,
    RegressionTask,
    SurvivalTask,
)
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

    def spy(model, bags, ids, task):  # the first call predicts the test bags (then the validation bags)
        columns = original(model, bags, ids, task)
        if "ids" not in seen:
            seen["ids"], seen["columns"] = tuple(ids), columns
        return columns

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


# -- slide-level bags (model.bags: slide) --------------------------------------------------------
def test_slide_ids_are_the_given_names_or_the_slides_positions():
    keys = ["A\x1f1", "B\x1f0", "A\x1f0"]
    assert slide_ids(keys, {"A": ["a-left", "a-right"], "B": ["b"]}) == ["a-right", "b", "a-left"]
    assert slide_ids(keys) == ["1", "0", "0"]
    with pytest.raises(ValueError, match="no name for slide bag 1 of patient 'A'"):
        slide_ids(keys, {"A": ["a-left"], "B": ["b"]})


def two_slide_table(tmp_path, n_patients: int = 8):
    """An instance table: patient Pi has bags Pi-s0 and Pi-s1 (3 instances each), label i % 2."""
    rng = np.random.default_rng(0)
    rows = [
        {"bag_id": f"P{i}-s{s}", "patient_id": f"P{i}", "label": i % 2, "f0": x[0] + i % 2, "f1": x[1]}
        for i in range(n_patients)
        for s in range(2)
        for x in rng.normal(size=(3, 2))
    ]
    path = tmp_path / "instances.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return load_instance_table(path)


def test_slide_level_rows_name_each_test_slide_and_keep_a_patients_slides_in_one_split(tmp_path, monkeypatch):
    cohort, source, _ = two_slide_table(tmp_path)
    bags = load_bags(source, source.patients, by_slide=True)
    names = dict(source.slide_names())
    assert names["P3"] == ("P3-s0", "P3-s1")  # an instance table's slides are its bags
    plan = FoldPlan(fold=0, fit_ids=("P0", "P1", "P2", "P3"), val_ids=("P4", "P5"), test_ids=("P6", "P7"))
    seen = {}
    fit, predict = cv.fit_aggregator, cv.predict_bags

    def fit_spy(aggregator, bags, targets, fit_ids, val_ids, *args, **kwargs):
        seen["fit"], seen["val"], seen["targets"] = fit_ids, val_ids, targets
        return fit(aggregator, bags, targets, fit_ids, val_ids, *args, **kwargs)

    def predict_spy(model, bags, ids, task):  # the first call predicts the test bags (then the validation bags)
        columns = predict(model, bags, ids, task)
        if "test" not in seen:
            seen["test"], seen["columns"] = tuple(ids), columns
        return columns

    monkeypatch.setattr(cv, "fit_aggregator", fit_spy)
    monkeypatch.setattr(cv, "predict_bags", predict_spy)
    config = TrainConfig.from_model(ModelConfig(max_epochs=1, patience=1, hidden_dim=8, bags="slide"))
    rows = cv.train_fold(plan, "meanpool", bags, cohort.targets, config, seed=0, slide_names=names)

    assert list(rows.columns[:5]) == ["patient_id", "slide_id", "model", "repeat", "fold"]
    assert list(rows["patient_id"]) == ["P6", "P6", "P7", "P7"]
    assert list(rows["slide_id"]) == ["P6-s0", "P6-s1", "P7-s0", "P7-s1"]
    assert list(rows["label"]) == [0, 0, 1, 1]  # each slide carries its patient's target
    np.testing.assert_allclose(rows["score"], seen["columns"]["score"])  # one slide's prediction per row, not a mean
    # Every split holds both slides of each of its patients, and only its patients' slides.
    for split, patients in (("fit", plan.fit_ids), ("val", plan.val_ids), ("test", plan.test_ids)):
        assert sorted(seen[split]) == sorted(f"{p}\x1f{s}" for p in patients for s in (0, 1))
    assert seen["targets"]["P3\x1f1"] == 1 and seen["targets"]["P4\x1f0"] == 0


@pytest.mark.parametrize("kind", ["multiclass", "regression", "survival"])
def test_each_task_cross_validates_per_slide_with_patient_level_folds(kind):
    rng = np.random.default_rng(1)
    ids = [f"P{i:02d}" for i in range(12)]
    bags = {pid: [rng.normal(size=(5, 4)).astype(np.float32) + i / 6 for _ in range(2)] for i, pid in enumerate(ids)}
    if kind == "multiclass":
        task, targets = MulticlassTask(MulticlassConfig()), {pid: "abc"[i % 3] for i, pid in enumerate(ids)}
    elif kind == "regression":
        task, targets = RegressionTask(), {pid: float(i) for i, pid in enumerate(ids)}
    else:
        task, targets = SurvivalTask(), {pid: (1.0 + i, i % 2) for i, pid in enumerate(ids)}
    names = {pid: [f"{pid}-x", f"{pid}-y"] for pid in ids}
    config = TrainConfig.from_model(ModelConfig(max_epochs=1, patience=1, hidden_dim=8, bags="slide"))

    rows = cv.cross_validate(bags, targets, ["meanpool"], n_folds=3, config=config, seed=0, task=task, slide_names=names)

    task = task.bind(rows)  # a multiclass task learns its classes
    assert list(rows.columns) == list(cv.prediction_columns(task, by_slide=True))
    assert sorted(rows["slide_id"]) == sorted(name for pid in ids for name in names[pid])
    assert (rows.groupby("patient_id")["fold"].nunique() == 1).all()  # a patient's slides are tested in one fold
    # Each slide row carries its patient's target, in the task's own columns.
    truth = [targets[p] if len(task.target_columns) == 1 else tuple(targets[p]) for p in rows["patient_id"]]
    given = rows[list(task.target_columns)].itertuples(index=False)
    assert [row[0] if len(row) == 1 else tuple(row) for row in given] == truth
    assert rows[list(task.prediction_columns)].notna().all().all()
