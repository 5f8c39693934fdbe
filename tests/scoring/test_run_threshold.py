"""A run's decision threshold chosen per model on validation predictions, never on the test rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from wsi_pipeline.config.workflow import ScoringConfig, WorkflowPreset
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.run_threshold import (
    validation_risk_cutoffs,
    validation_thresholds,
)
from wsi_pipeline.scoring.stage import score_predictions
from wsi_pipeline.scoring.threshold import youden_threshold


def table(model: str, n: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * (2 * labels - 1) - 1.0)))  # poorly calibrated: centred low
    return pd.DataFrame({"patient_id": [f"{model}-{i:03d}" for i in range(n)], "model": model, "repeat": 0,
                         "fold": np.arange(n) % 3, "label": labels, "score": scores})


def test_each_model_gets_youdens_threshold_of_its_own_validation_rows(tmp_path):
    validation = pd.concat([table("abmil", 40, 0, 1.5), table("meanpool", 40, 1, 0.5)])
    path = tmp_path / "validation_predictions.csv"
    validation.to_csv(path, index=False)
    chosen = validation_thresholds(path, ["abmil", "meanpool"], "youden")
    for model in ("abmil", "meanpool"):
        rows = validation[validation["model"] == model]
        assert chosen[model].value == youden_threshold(rows["label"], rows["score"])
        assert chosen[model].n_validation == 40 and chosen[model].method == "youden"
    assert chosen["abmil"].value != chosen["meanpool"].value
    sensitive = validation_thresholds(path, ["abmil"], "sensitivity", target_sensitivity=0.9)["abmil"]
    rows = validation[validation["model"] == "abmil"]
    assert (rows.loc[rows["label"] == 1, "score"] >= sensitive.value).mean() >= 0.9


def test_test_rows_are_scored_at_the_validation_threshold(tmp_path):
    test = table("abmil", 60, 5, 1.5)
    test["patient_id"] = [f"P{i:03d}" for i in range(60)]
    validation = table("abmil", 40, 0, 1.5)
    path = tmp_path / "validation_predictions.csv"
    validation.to_csv(path, index=False)
    chosen = validation_thresholds(path, ["abmil"], "youden")
    metrics = score_predictions(test, tmp_path / "out", n_resamples=200, thresholds=chosen)
    expected = accuracy_score(test["label"], test["score"] >= chosen["abmil"].value)
    at_half = accuracy_score(test["label"], test["score"] >= 0.5)
    assert metrics["abmil"]["accuracy"]["value"] == pytest.approx(expected) and expected != pytest.approx(at_half)
    assert metrics["abmil"]["threshold"]["value"] == chosen["abmil"].value
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["abmil"]["threshold"]["method"] == "youden"
    assert "maximising Youden's J on 40 validation rows" in (tmp_path / "out" / "report.md").read_text()


def test_missing_or_one_class_validation_rows_are_clear_errors(tmp_path):
    with pytest.raises(WSIPipelineError, match="no validation predictions"):
        validation_thresholds(tmp_path / "absent.csv", ["abmil"], "youden")
    one_class = table("abmil", 10, 0, 1.0).assign(label=1)
    one_class.to_csv(tmp_path / "v.csv", index=False)
    with pytest.raises(WSIPipelineError, match="1 class"):
        validation_thresholds(tmp_path / "v.csv", ["abmil"], "youden")


def test_threshold_settings_are_checked_when_the_workflow_loads():
    with pytest.raises(ValueError, match="needs scoring.target_sensitivity"):
        ScoringConfig(threshold_method="sensitivity")
    with pytest.raises(ValueError, match="only read with threshold_method: sensitivity"):
        ScoringConfig(target_sensitivity=0.9)
    with pytest.raises(ValueError, match="regression task has none"):
        WorkflowPreset(name="x", task={"type": "regression"}, scoring={"threshold_method": "youden"})
    assert WorkflowPreset(name="x", scoring={"threshold_method": "youden"}).scoring.threshold_method == "youden"


def test_survival_cutoffs_are_each_models_median_validation_risk(tmp_path):
    path = tmp_path / "validation_predictions.csv"
    pd.DataFrame({"patient_id": ["a", "b", "c", "a", "b"], "model": ["m1", "m1", "m1", "m2", "m2"],
                  "risk": [0.1, 0.9, 0.4, 2.0, float("nan")]}).to_csv(path, index=False)
    cutoffs = validation_risk_cutoffs(path, ["m1", "m2", "m3"])
    assert cutoffs["m1"].value == pytest.approx(0.4) and cutoffs["m1"].rule == "validation"
    assert cutoffs["m2"].value == pytest.approx(2.0)  # a missing risk is left out
    assert "m3" not in cutoffs  # no validation rows: the stage falls back to the scored rows' median, and says so
    assert validation_risk_cutoffs(tmp_path / "absent.csv", ["m1"]) == {}
