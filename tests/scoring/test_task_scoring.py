"""Scoring per task: each task's predictions table through validation, the bootstrap, plots and report; repeats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks import (
    BinaryTask,
    MulticlassTask,
    RegressionTask,
    SurvivalTask,
)
from wsi_pipeline.scoring.bootstrap import bootstrap_ci, bootstrap_task_metrics
from wsi_pipeline.scoring.predictions import validate_predictions
from wsi_pipeline.scoring.stage import score_predictions

N = 40
RESAMPLES = 100


def frame(kind: str, model: str = "abmil", repeat: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(99)  # the same patients and targets in every repeat and model
    base = {"patient_id": [f"P{i:02d}" for i in range(N)], "model": model, "repeat": repeat, "fold": np.arange(N) % 4}
    if kind == "multiclass":
        y = truth.integers(0, 3, N)
        logits = rng.normal(size=(N, 3)) + 2.0 * np.eye(3)[y]
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return pd.DataFrame({**base, "label": y, "prob_0": p[:, 0], "prob_1": p[:, 1], "prob_2": p[:, 2],
                             "predicted": p.argmax(axis=1).astype(str)})
    if kind == "regression":
        y = truth.normal(10, 3, N)
        return pd.DataFrame({**base, "target": y, "prediction": y + rng.normal(0, 2, N)})
    risk = truth.normal(size=N)
    time = truth.exponential(np.exp(-risk) * 10)
    event = (truth.random(N) < 0.7).astype(int)
    return pd.DataFrame({**base, "pfs_months": time, "event": event, "risk": risk + rng.normal(0, 0.5, N)})


def task_for(kind: str):
    return {"multiclass": MulticlassTask(), "regression": RegressionTask(), "survival": SurvivalTask()}[kind]


PER_CLASS = {f"{m}_{c}" for m in ("precision", "recall", "f1", "auc") for c in "012"}
EXPECTED = {
    "multiclass": ({"macro_auc", "accuracy", "balanced_accuracy", "macro_f1"}, {"n_per_class", "confusion", *PER_CLASS},
                   {"roc.png", "confusion_abmil.png", "confusion_meanpool.png"}, "One-vs-rest ROC"),
    "regression": ({"mae", "rmse", "r2", "pearson", "spearman"}, set(), {"scatter.png"}, "Predicted against true"),
    "survival": ({"c_index"}, {"n_events", "logrank_p", "hazard_ratio", "risk_groups"}, {"km_abmil.png", "km_meanpool.png"},
                 "Kaplan"),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_task_is_scored_with_its_metrics_plots_and_report(tmp_path, kind):
    table = pd.concat([frame(kind), frame(kind, "meanpool", seed=1)], ignore_index=True)
    metrics = score_predictions(table, tmp_path, n_resamples=RESAMPLES, task=task_for(kind), title="T")
    names, counts, plots, words = EXPECTED[kind]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    task = task_for(kind).bind(table)
    for model, rows in table.groupby("model"):
        entry = metrics[model]
        assert set(entry) == names | counts | {"n_patients"} and entry["n_patients"] == N
        point = task.metrics(rows.sort_values("patient_id"))
        for name in names:
            assert set(entry[name]) == {"value", "ci_low", "ci_high"}
            assert entry[name]["value"] == pytest.approx(point[name])
            assert entry[name]["ci_low"] <= entry[name]["value"] <= entry[name]["ci_high"]
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == plots
    report = (tmp_path / "report.md").read_text()
    assert f"**task**: {kind}" in report and words in report
    assert all(task.metric_labels[name] in report for name in names)


def test_repeats_average_the_metric_and_bootstrap_the_mean_over_patients(tmp_path):
    table = pd.concat([frame("regression", repeat=r, seed=r) for r in range(3)], ignore_index=True)
    metrics = score_predictions(table, tmp_path, n_resamples=RESAMPLES, task=RegressionTask())
    entry = metrics["abmil"]
    per_repeat = [RegressionTask().metrics(rows)["mae"] for _, rows in table.groupby("repeat")]
    assert entry["mae"]["per_repeat"] == pytest.approx(per_repeat)
    assert entry["mae"]["value"] == pytest.approx(np.mean(per_repeat))
    assert entry["n_repeats"] == 3 and entry["n_patients"] == N
    assert "repeated 3 times" in (tmp_path / "report.md").read_text()


def test_one_repeat_of_the_task_bootstrap_is_the_plain_bootstrap():
    table = frame("regression")
    task = RegressionTask()
    columns = {c: table[c].to_numpy() for c in ("target", "prediction")}
    ((interval, per_repeat),) = bootstrap_task_metrics([columns], task.metrics, ["rmse"], n_resamples=200, seed=4).values()
    plain = bootstrap_ci(columns["target"], columns["prediction"], lambda y, p: float(np.sqrt(np.mean((y - p) ** 2))),
                         n_resamples=200, seed=4)
    assert (interval.value, interval.ci_low, interval.ci_high) == pytest.approx((plain.value, plain.ci_low, plain.ci_high))
    assert per_repeat == [pytest.approx(plain.value)]


def test_repeats_must_cover_the_same_patients(tmp_path):
    table = pd.concat([frame("regression"), frame("regression", repeat=1).iloc[1:]], ignore_index=True)
    with pytest.raises(WSIPipelineError, match="different patients in different repeats"):
        score_predictions(table, tmp_path, n_resamples=RESAMPLES, task=RegressionTask())


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("multiclass", {"prob_1": 1.5}, "'prob_1' is outside"),
        ("multiclass", {"predicted": "7"}, "'predicted' is not a known class"),
        ("regression", {"prediction": "high"}, "'prediction' is not a number"),
        ("survival", {"event": 2}, "'event' is not 0 or 1"),
        ("survival", {"risk": None}, "'risk' is empty"),
    ],
)
def test_bad_task_columns_name_the_column_and_the_table(kind, change, message):
    table = frame(kind)
    column, value = next(iter(change.items()))
    table[column] = table[column].astype(object)
    table.loc[3, column] = value
    with pytest.raises(WSIPipelineError, match=message) as error:
        validate_predictions(table, source="run/predictions.csv", task=task_for(kind).bind(frame(kind)))
    assert "run/predictions.csv" in str(error.value)


def test_a_task_table_without_its_target_column_is_refused():
    with pytest.raises(WSIPipelineError, match="missing column 'target'"):
        validate_predictions(frame("regression").drop(columns="target"), task=RegressionTask())
    with pytest.raises(WSIPipelineError, match="missing column 'label'"):
        validate_predictions(frame("regression"), task=BinaryTask())
