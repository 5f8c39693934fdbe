"""``wsi-pipeline score --predictions ... --truth ...``: outputs, options, and every bad input as exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.scoring.binary import BINARY_METRICS


def binary_files(folder: Path, n: int = 60, models: tuple[str, ...] = ("abmil", "meanpool")) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(n)]
    y = np.array([i % 3 == 0 for i in range(n)], dtype=int)
    truth = folder / "truth.csv"
    pd.DataFrame({"patient_id": ids, "label": y}).to_csv(truth, index=False)
    rows = [pd.DataFrame({"patient_id": ids, "model": m, "score": 1 / (1 + np.exp(-(rng.normal(0, 1, n) + (1.2 - 0.6 * k) * (y - 0.5) * 2)))})
            for k, m in enumerate(models)]
    predictions = folder / "preds.csv"
    pd.concat(rows).to_csv(predictions, index=False)
    return predictions, truth


def score(predictions: Path, truth: Path, out: Path, *extra: str, task: str = "binary") -> int:
    return main(["score", "--predictions", str(predictions), "--truth", str(truth), "--task", task, "--output", str(out), *extra])


def test_binary_writes_the_metrics_contract_plots_and_report(tmp_path, capsys):
    predictions, truth = binary_files(tmp_path)
    assert score(predictions, truth, tmp_path / "out") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"abmil", "meanpool", "comparisons"}
    for model in ("abmil", "meanpool"):
        for name in BINARY_METRICS:
            entry = metrics[model][name]
            assert set(entry) == {"value", "ci_low", "ci_high"} and entry["ci_low"] <= entry["value"] <= entry["ci_high"]
        assert metrics[model]["n_patients"] == 60 and metrics[model]["n_positive"] == 20
        assert metrics[model]["threshold"]["method"] == "fixed" and metrics[model]["threshold"]["value"] == 0.5
        assert 0 < metrics[model]["auc_permutation_p"] <= 1
    [comparison] = metrics["comparisons"]
    assert (comparison["model"], comparison["reference"]) == ("abmil", "meanpool")
    assert comparison["delong"]["p_value"] is not None and comparison["auc_difference"]["value"] > 0
    assert (tmp_path / "out" / "plots" / "roc.png").stat().st_size > 0
    assert (tmp_path / "out" / "plots" / "reliability.png").stat().st_size > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Metric [95% CI]" in report and "0.5, fixed in advance" in report and "DeLong" in report
    assert "abmil" in capsys.readouterr().err


def test_ci_level_changes_the_interval_and_the_text(tmp_path):
    predictions, truth = binary_files(tmp_path, models=("m",))
    assert score(predictions, truth, tmp_path / "a") == 0
    assert score(predictions, truth, tmp_path / "b", "--ci-level", "0.8") == 0
    wide = json.loads((tmp_path / "a" / "metrics.json").read_text())["m"]["auc"]
    narrow = json.loads((tmp_path / "b" / "metrics.json").read_text())["m"]["auc"]
    assert wide["value"] == narrow["value"] and wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "80% CI" in report and "95% CI" not in report


def test_without_a_model_column_the_model_is_the_file_stem(tmp_path):
    predictions, truth = binary_files(tmp_path, models=("x",))
    single = tmp_path / "uni_abmil.csv"
    pd.read_csv(predictions).drop(columns="model").to_csv(single, index=False)
    assert score(single, truth, tmp_path / "out", "--n-resamples", "200") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"uni_abmil", "comparisons"} and metrics["comparisons"] == []


def edit(path: Path, change) -> Path:
    table = pd.read_csv(path, dtype={"patient_id": str})
    table = change(table)
    table.to_csv(path, index=False)
    return path


BAD_BINARY = {
    "id only in predictions": ("preds", lambda t: pd.concat([t, t.iloc[[0]].assign(patient_id="ZZZ")]),
                               ["not in the truth file", "ZZZ", "preds.csv"]),
    "id only in truth": ("truth", lambda t: pd.concat([t, pd.DataFrame({"patient_id": ["NEW1"], "label": [1]})]),
                         ["no prediction from model", "NEW1"]),
    "duplicate id in a model": ("preds", lambda t: pd.concat([t, t.iloc[[3]]]), ["more than once per model", "P003"]),
    "duplicate id in truth": ("truth", lambda t: pd.concat([t, t.iloc[[2]]]), ["more than once", "P002", "truth.csv"]),
    "NaN score": ("preds", lambda t: t.assign(score=t["score"].where(t.index != 5)), ["empty or NaN", "P005"]),
    "probability above 1": ("preds", lambda t: t.assign(score=t["score"].where(t.index != 7, 1.7)), ["outside [0, 1]", "P007"]),
    "single class": ("truth", lambda t: t.assign(label=1), ["label 1", "both classes"]),
    "label not 0/1": ("truth", lambda t: t.assign(label=t["label"].where(t.index != 4, 2)), ["not 0 or 1", "P004"]),
    "missing score column": ("preds", lambda t: t.rename(columns={"score": "prob"}), ["no column 'score'", "--score-column", "prob"]),
    "missing label column": ("truth", lambda t: t.rename(columns={"label": "y"}), ["no column 'label'", "--label-column", "truth.csv"]),
    "fold not an integer": ("preds", lambda t: t.assign(fold=np.where(t.index == 6, 1.5, 0)), ["'fold'", "integers >= 0", "P006"]),
    "missing id column": ("truth", lambda t: t.rename(columns={"patient_id": "case"}), ["no column 'patient_id'", "--id-column"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BINARY))
def test_bad_binary_inputs_exit_2_with_a_clear_message(tmp_path, capsys, case):
    predictions, truth = binary_files(tmp_path, n=12)
    which, change, phrases = BAD_BINARY[case]
    edit(predictions if which == "preds" else truth, change)
    assert score(predictions, truth, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "fix:" in err
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    assert not (tmp_path / "out" / "metrics.json").exists()


def survival_files(folder: Path, n: int = 30) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    ids = [f"S{i:02d}" for i in range(n)]
    risk = rng.normal(0, 1, n)
    truth = folder / "truth.csv"
    pd.DataFrame({"patient_id": ids, "time": rng.exponential(10 * np.exp(-risk)), "event": rng.integers(0, 2, n)}).to_csv(truth, index=False)
    predictions = folder / "preds.csv"
    pd.DataFrame({"patient_id": ids, "score": risk + rng.normal(0, 0.5, n)}).to_csv(predictions, index=False)
    return predictions, truth


@pytest.mark.parametrize(("time", "phrase"), [(-1.0, "is negative"), (None, "is empty")])
def test_negative_or_missing_survival_time_exits_2(tmp_path, capsys, time, phrase):
    predictions, truth = survival_files(tmp_path)
    edit(truth, lambda t: t.assign(time=t["time"].where(t.index != 3, time)))
    assert score(predictions, truth, tmp_path / "out", task="survival") == 2
    err = capsys.readouterr().err
    assert phrase in err and "S03" in err and "truth.csv" in err and "'time'" in err


def test_survival_is_scored_by_its_task(tmp_path):
    predictions, truth = survival_files(tmp_path)
    assert score(predictions, truth, tmp_path / "surv", "--n-resamples", "100", task="survival") == 0
    metrics = json.loads((tmp_path / "surv" / "metrics.json").read_text())["preds"]
    assert metrics["c_index"]["value"] > 0.5 and metrics["n_patients"] == 30


def test_regression_is_scored_by_its_task(tmp_path):
    rng = np.random.default_rng(2)
    ids = [f"R{i:02d}" for i in range(30)]
    target = rng.normal(0, 1, 30)
    pd.DataFrame({"patient_id": ids, "label": target}).to_csv(tmp_path / "rt.csv", index=False)
    pd.DataFrame({"patient_id": ids, "score": target + rng.normal(0, 0.3, 30)}).to_csv(tmp_path / "rp.csv", index=False)
    assert score(tmp_path / "rp.csv", tmp_path / "rt.csv", tmp_path / "reg", "--n-resamples", "100", task="regression") == 0
    assert json.loads((tmp_path / "reg" / "metrics.json").read_text())["rp"]["pearson"]["value"] > 0.8


def test_multiclass_reads_one_probability_column_per_class(tmp_path, capsys):
    rng = np.random.default_rng(3)
    ids = [f"M{i:02d}" for i in range(30)]
    classes = np.array(["a", "b", "c"])[np.arange(30) % 3]
    probs = rng.dirichlet(np.ones(3), 30)
    pd.DataFrame({"patient_id": ids, "label": classes}).to_csv(tmp_path / "mt.csv", index=False)
    frame = pd.DataFrame({"patient_id": ids, "p_a": probs[:, 0], "p_b": probs[:, 1], "p_c": probs[:, 2]})
    frame.to_csv(tmp_path / "mp.csv", index=False)
    assert score(tmp_path / "mp.csv", tmp_path / "mt.csv", tmp_path / "mc", "--class-prefix", "p_", "--n-resamples", "100",
                 task="multiclass") == 0
    assert "macro_f1" in json.loads((tmp_path / "mc" / "metrics.json").read_text())["mp"]
    frame.drop(columns="p_c").to_csv(tmp_path / "mp.csv", index=False)
    assert score(tmp_path / "mp.csv", tmp_path / "mt.csv", tmp_path / "mc2", "--class-prefix", "p_", task="multiclass") == 2
    assert "no column 'p_c'" in capsys.readouterr().err


def test_a_tuned_threshold_without_validation_rows_is_refused(tmp_path, capsys):
    predictions, truth = binary_files(tmp_path, n=12)
    assert score(predictions, truth, tmp_path / "out", "--threshold-method", "youden") == 2
    err = capsys.readouterr().err
    assert "never tuned on the scored (test) rows" in err and "validation" in err


def test_score_needs_a_manifest_or_the_standalone_options(tmp_path, capsys):
    assert main(["score"]) == 2
    assert "no manifest given" in capsys.readouterr().err
    assert main(["score", "--predictions", "p.csv", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--truth" in err and "--task" in err
