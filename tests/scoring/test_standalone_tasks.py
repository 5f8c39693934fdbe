"""Standalone scoring of survival (risk cut-off from validation rows) and multiclass files, with subgroup and site breakdowns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from wsi_pipeline.cli.main import main
from wsi_pipeline.scoring.inputs import Columns
from wsi_pipeline.scoring.standalone import ScoringSettings, score_files

SETTINGS = ScoringSettings(n_resamples=100)


def survival_files(folder: Path, n: int = 40, n_validation: int = 10) -> tuple[Path, Path, pd.DataFrame]:
    rng = np.random.default_rng(3)
    ids = [f"P{i:02d}" for i in range(n + n_validation)]
    risk = rng.normal(size=n + n_validation)
    truth = pd.DataFrame({"patient_id": ids, "time": rng.exponential(np.exp(-risk)), "event": (rng.random(len(ids)) < 0.8).astype(int)})
    # Validation risks shifted up: their median is a cut-off the scored rows' median would not give.
    predictions = pd.DataFrame({"patient_id": ids, "score": risk + rng.normal(0, 0.5, len(ids)) + np.r_[np.zeros(n), np.ones(n_validation)],
                                "split": ["test"] * n + ["validation"] * n_validation})
    truth.to_csv(folder / "truth.csv", index=False)
    predictions.to_csv(folder / "preds.csv", index=False)
    return folder / "preds.csv", folder / "truth.csv", predictions.merge(truth)


def test_survival_groups_split_at_the_validation_median(tmp_path):
    predictions, truth, rows = survival_files(tmp_path)
    entry = score_files(predictions, truth, "survival", tmp_path / "out", settings=SETTINGS)["preds"]
    cut = float(np.median(rows.loc[rows["split"] == "validation", "score"]))
    assert entry["risk_groups"]["rule"] == "validation" and entry["risk_groups"]["cutoff"] == pytest.approx(cut)
    test = rows[rows["split"] == "test"]
    high = (test["score"] >= cut).to_numpy()
    assert 0 < high.sum() < len(test) and high.sum() != len(test) // 2  # not the scored rows' own median split
    expected = logrank_test(test["time"][high], test["time"][~high], test["event"][high], test["event"][~high]).p_value
    assert entry["logrank_p"] == {"value": pytest.approx(expected), "ci_low": None, "ci_high": None}
    assert entry["hazard_ratio"]["ci_low"] < entry["hazard_ratio"]["value"] < entry["hazard_ratio"]["ci_high"]
    assert entry["n_patients"] == 40
    report = (tmp_path / "out" / "report.md").read_text()
    assert "median predicted risk of the validation rows" in report


def test_multiclass_file_with_a_site_in_the_truth_and_a_subgroup_column(tmp_path):
    rng = np.random.default_rng(0)
    n = 45
    y = np.array(["a", "b", "c"])[np.arange(n) % 3]
    prob = rng.dirichlet(np.ones(3), n) + 1.5 * (y[:, None] == np.array(["a", "b", "c"]))
    prob /= prob.sum(axis=1, keepdims=True)
    ids = [f"P{i:02d}" for i in range(n)]
    pd.DataFrame({"patient_id": ids, "label": y, "site": np.repeat(["x", "y", "z"], 15)}).to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame({"patient_id": ids, **{f"prob_{c}": prob[:, k] for k, c in enumerate("abc")},
                  "sex": np.tile(["f", "m", "m"], 15)}).to_csv(tmp_path / "preds.csv", index=False)
    metrics = score_files(tmp_path / "preds.csv", tmp_path / "truth.csv", "multiclass", tmp_path / "out",
                          columns=Columns(subgroups=("sex",)), settings=SETTINGS)
    entry = metrics["preds"]
    predicted = np.array(list("abc"))[prob.argmax(axis=1)]
    assert entry["macro_f1"]["value"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert entry["f1_b"]["value"] == pytest.approx(f1_score(y == "b", predicted == "b"))
    assert sum(map(sum, entry["confusion"]["counts"])) == n
    assert list(entry["subgroups"]) == ["site", "sex"]
    women = np.tile(["f", "m", "m"], 15) == "f"
    assert entry["subgroups"]["sex"]["f"]["macro_f1"]["value"] == pytest.approx(f1_score(y[women], predicted[women], average="macro"))
    assert (tmp_path / "out" / "plots" / "confusion_preds.png").is_file()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


def test_binary_subgroups_via_the_cli_and_an_unknown_column_exits_2(tmp_path, capsys):
    n = 40
    ids = [f"P{i:02d}" for i in range(n)]
    y = np.arange(n) % 2
    pd.DataFrame({"patient_id": ids, "label": y, "stage": np.repeat(["I", "II"], n // 2)}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"patient_id": ids, "score": 0.3 + 0.4 * y * (np.arange(n) % 3 > 0)}).to_csv(tmp_path / "p.csv", index=False)
    base = ["score", "--predictions", str(tmp_path / "p.csv"), "--truth", str(tmp_path / "t.csv"), "--task", "binary",
            "--n-resamples", "100"]
    assert main([*base, "--output", str(tmp_path / "o"), "--subgroup-column", "stage"]) == 0
    stage = json.loads((tmp_path / "o" / "metrics.json").read_text())["p"]["subgroups"]["stage"]
    assert set(stage) == {"I", "II"} and stage["I"]["n_patients"] == 20
    assert "### Subgroups" in (tmp_path / "o" / "report.md").read_text()
    assert main([*base, "--output", str(tmp_path / "e"), "--subgroup-column", "grade"]) == 2
    assert "subgroup column 'grade' is in neither" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "e"), "--time-auc", "12"]) == 2
    assert "a binary task has none" in capsys.readouterr().err


def test_a_fold_column_gives_every_task_per_fold_intervals(tmp_path):
    rng = np.random.default_rng(4)
    n = 45
    ids = [f"P{i:02d}" for i in range(n)]
    target = rng.normal(50, 10, n)
    prediction = target + rng.normal(0, 6, n)
    fold = np.arange(n) % 3
    pd.DataFrame({"patient_id": ids, "label": target}).to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame({"patient_id": ids, "score": prediction, "fold": fold}).to_csv(tmp_path / "preds.csv", index=False)
    entry = score_files(tmp_path / "preds.csv", tmp_path / "truth.csv", "regression", tmp_path / "out", settings=SETTINGS)["preds"]
    assert [(e["repeat"], e["fold"]) for e in entry["per_fold"]] == [(0, 0), (0, 1), (0, 2)]
    for k, part in enumerate(entry["per_fold"]):
        rows = fold == k
        assert part["n_patients"] == 15
        assert part["mae"]["value"] == pytest.approx(np.abs(prediction[rows] - target[rows]).mean())
        assert part["pearson"]["value"] == pytest.approx(pearsonr(target[rows], prediction[rows])[0])
        assert part["mae"]["ci_low"] < part["mae"]["value"] < part["mae"]["ci_high"]
    assert "### Per fold" in (tmp_path / "out" / "report.md").read_text()
