"""Standalone scoring as a library call: the threshold comes from validation rows only; patient groups."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from wsi_pipeline.scoring.formatting import format_interval
from wsi_pipeline.scoring.inputs import Columns
from wsi_pipeline.scoring.standalone import ScoringSettings, score_files


def test_the_threshold_is_chosen_on_validation_rows_and_never_on_test_rows(tmp_path):
    # Validation rows separate perfectly at 0.3 (Youden's J = 1 there); test rows separate at 0.7.
    # Tuned on the test rows (or on all rows) the threshold would be 0.7 or another value, and the
    # test specificity 1; at the validation threshold 0.3 it is 1/4 (0.5, 0.4 and 0.35 called positive).
    val = pd.DataFrame({"patient_id": ["V1", "V2", "V3", "V4", "V5", "V6"], "score": [0.35, 0.3, 0.32, 0.1, 0.2, 0.15],
                        "label": [1, 1, 1, 0, 0, 0], "split": "validation"})
    test = pd.DataFrame({"patient_id": [f"T{i}" for i in range(8)], "score": [0.9, 0.8, 0.75, 0.7, 0.5, 0.4, 0.35, 0.1],
                         "label": [1, 1, 1, 1, 0, 0, 0, 0], "split": "test"})
    both = pd.concat([val, test])
    both[["patient_id", "label"]].to_csv(tmp_path / "truth.csv", index=False)
    both[["patient_id", "score", "split"]].to_csv(tmp_path / "model.csv", index=False)
    metrics = score_files(tmp_path / "model.csv", tmp_path / "truth.csv", "binary", tmp_path / "out",
                          settings=ScoringSettings(threshold_method="youden", n_resamples=200))
    entry = metrics["model"]
    assert entry["threshold"] == {"value": 0.3, "method": "youden", "n_validation": 6, "target_sensitivity": None}
    assert entry["specificity"]["value"] == 0.25 and entry["sensitivity"]["value"] == 1.0
    assert entry["n_patients"] == 8  # validation rows are not scored
    assert "maximising Youden's J on 6 validation rows" in (tmp_path / "out" / "report.md").read_text()


def test_several_rows_per_patient_resample_patients_and_skip_delong(tmp_path):
    rng = np.random.default_rng(0)
    patients = np.repeat([f"P{i:02d}" for i in range(30)], 2)
    slides = [f"{p}-{k}" for p, k in zip(patients, [0, 1] * 30, strict=True)]
    label = np.repeat(np.arange(30) % 2, 2)
    pd.DataFrame({"slide_id": slides, "patient": patients, "label": label}).to_csv(tmp_path / "truth.csv", index=False)
    rows = [pd.DataFrame({"slide_id": slides, "model": m, "score": 1 / (1 + np.exp(-(rng.normal(0, 1, 60) + k * (label - 0.5) * 3)))})
            for k, m in ((1, "abmil"), (0.5, "clam"))]
    pd.concat(rows).to_csv(tmp_path / "preds.csv", index=False)
    metrics = score_files(tmp_path / "preds.csv", tmp_path / "truth.csv", "binary", tmp_path / "out",
                          columns=Columns(id="slide_id", group="patient"), settings=ScoringSettings(n_resamples=200))
    assert metrics["abmil"]["n_patients"] == 30 and metrics["abmil"]["n_slides"] == 60
    [comparison] = metrics["comparisons"]
    assert comparison["delong"] is None and comparison["n_patients"] == 30
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["comparisons"] == metrics["comparisons"]
    assert "DeLong's test not computed (several rows per patient" in (tmp_path / "out" / "report.md").read_text()


def test_a_fold_column_adds_per_fold_metrics(tmp_path):
    rng = np.random.default_rng(2)
    ids = [f"P{i:02d}" for i in range(60)]
    y = np.arange(60) % 2
    fold = np.arange(60) % 3
    score = 1 / (1 + np.exp(-(rng.normal(0, 1, 60) + (y - 0.5) * 2)))
    pd.DataFrame({"patient_id": ids, "label": y}).to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame({"patient_id": ids, "score": score, "fold": fold}).to_csv(tmp_path / "m.csv", index=False)
    entry = score_files(tmp_path / "m.csv", tmp_path / "truth.csv", "binary", tmp_path / "out",
                        settings=ScoringSettings(n_resamples=200))["m"]
    assert entry["auc"]["value"] == pytest.approx(roc_auc_score(y, score))  # pooled
    # The run stage's per-fold entries: one per (repeat, fold), every binary metric with its own bootstrap.
    assert [(e["repeat"], e["fold"]) for e in entry["per_fold"]] == [(0, 0), (0, 1), (0, 2)]
    for k, part in enumerate(entry["per_fold"]):
        assert part["auc"]["value"] == pytest.approx(roc_auc_score(y[fold == k], score[fold == k]))
        assert part["n_patients"] == 20 and part["n_positive"] == int(y[fold == k].sum())
        assert part["auc"]["ci_low"] <= part["auc"]["value"] <= part["auc"]["ci_high"]
        assert part["ece"]["value"] is not None
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Per fold" in report and format_interval(entry["per_fold"][1]["auc"]) + " (n=20," in report


def test_multiclass_probabilities_outside_0_1_are_refused(tmp_path):
    from wsi_pipeline.errors import WSIPipelineError

    ids = [f"M{i}" for i in range(6)]
    pd.DataFrame({"patient_id": ids, "label": ["a", "b", "c"] * 2}).to_csv(tmp_path / "t.csv", index=False)
    probs = np.full((6, 3), 1 / 3)
    probs[4, 1] = 1.3
    pd.DataFrame({"patient_id": ids, **{f"prob_{c}": probs[:, k] for k, c in enumerate("abc")}}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(WSIPipelineError, match=r"'prob_b' holds 1 value\(s\) outside \[0, 1\], e.g. M4: 1.3"):
        score_files(tmp_path / "p.csv", tmp_path / "t.csv", "multiclass", tmp_path / "out")
