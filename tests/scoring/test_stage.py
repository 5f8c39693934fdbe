"""The scoring stage end to end: files written, their structure, errors."""

import json

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks import BinaryTask
from wsi_pipeline.scoring.binary import BINARY_METRICS
from wsi_pipeline.scoring.bootstrap import bootstrap_task_metrics
from wsi_pipeline.scoring.formatting import format_value
from wsi_pipeline.scoring.stage import load_predictions, score_predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = set(BINARY_METRICS)  # the task's auc, accuracy, balanced accuracy and the rest of the binary set
N_RESAMPLES = 60  # enough to exercise the code; keeps the suite fast


def make_predictions(n_patients: int = 60, survival: bool = False, seed: int = 0) -> pd.DataFrame:
    """Two models on the same patients; abmil is informative, meanpool barely."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_patients)
    frames = []
    for model, separation in (("abmil", 2.0), ("meanpool", 0.5)):
        z = rng.normal(labels * separation - separation / 2, 1.0)
        frame = pd.DataFrame({
            "patient_id": [f"P{i:03d}" for i in range(n_patients)],
            "model": model,
            "fold": np.arange(n_patients) % 5,
            "label": labels,
            "score": 1 / (1 + np.exp(-z)),
        })
        if survival:
            frame["pfs_months"] = rng.exponential(np.where(labels == 1, 25.0, 6.0))
            frame["event"] = rng.integers(0, 2, n_patients) | (labels == 0)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


CONTEXT = {"dataset": "synthetic", "encoder": "random-demo (DEMO encoder)", "run id": "r42"}


def run(tmp_path, predictions, **kwargs):
    kwargs.setdefault("n_resamples", N_RESAMPLES)
    return score_predictions(predictions, tmp_path / "score", **kwargs)


# One run of each kind is shared by the tests that only read its outputs (keeps the suite fast).
@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("plain")
    metrics = run(tmp_path, make_predictions(), context=CONTEXT, title="RESPRED-UC demo")
    return tmp_path, metrics


@pytest.fixture(scope="module")
def with_survival(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("survival")
    return tmp_path, run(tmp_path, make_predictions(n_patients=80, survival=True), n_resamples=50)


def test_metrics_json_has_exact_structure(plain):
    tmp_path, returned = plain
    metrics = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert metrics == returned
    assert set(metrics) == {"abmil", "meanpool"}
    for entry in metrics.values():
        assert set(entry) == METRIC_KEYS | {"n_patients", "n_positive"}
        for name in METRIC_KEYS:
            assert set(entry[name]) == {"value", "ci_low", "ci_high"}
            assert entry[name]["ci_low"] <= entry[name]["value"] <= entry[name]["ci_high"]
        assert entry["n_patients"] == 60
        assert isinstance(entry["n_positive"], int) and 0 < entry["n_positive"] < 60
    assert metrics["abmil"]["auc"]["value"] > metrics["meanpool"]["auc"]["value"]


def test_roc_png_is_written(plain):
    tmp_path, _ = plain
    png = tmp_path / "score" / "plots" / "roc.png"
    data = png.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)
    assert not list((tmp_path / "score" / "plots").glob("km_*.png"))  # no survival columns


def test_report_names_models_auc_values_and_context(plain):
    tmp_path, metrics = plain
    report = (tmp_path / "score" / "report.md").read_text()
    assert report.startswith("# RESPRED-UC demo")
    for model, entry in metrics.items():
        assert model in report
        assert format_value(entry["auc"]["value"]) in report
        assert format_value(entry["auc"]["ci_low"]) in report
    assert "random-demo (DEMO encoder)" in report and "r42" in report
    assert "plots/roc.png" in report


def test_survival_columns_add_logrank_and_km_plots(with_survival):
    tmp_path, metrics = with_survival
    for model, entry in metrics.items():
        assert set(entry["logrank_p"]) == {"value", "ci_low", "ci_high"} and 0 <= entry["logrank_p"]["value"] <= 1
        km = tmp_path / "score" / "plots" / f"km_{model}.png"
        assert km.read_bytes().startswith(PNG_SIGNATURE)
        assert f"plots/km_{model}.png" in (tmp_path / "score" / "report.md").read_text()
    # labels drive both the score and PFS here, so the informative model separates PFS
    assert metrics["abmil"]["logrank_p"]["value"] < 0.01


def test_stale_km_plot_is_removed_when_survival_is_absent(tmp_path):
    def one_model(survival):
        df = make_predictions(n_patients=30, survival=survival)
        return df[df["model"] == "abmil"]

    run(tmp_path, one_model(survival=True), n_resamples=20)
    assert list((tmp_path / "score" / "plots").glob("km_*.png"))
    run(tmp_path, one_model(survival=False), n_resamples=20)
    assert not list((tmp_path / "score" / "plots").glob("km_*.png"))
    assert "km_" not in (tmp_path / "score" / "report.md").read_text()


def test_same_seed_reproduces_files(plain, tmp_path):
    first_dir, first = plain
    again = run(tmp_path, make_predictions(), context=CONTEXT, title="RESPRED-UC demo")
    assert again == first
    for name in ("metrics.json", "report.md"):
        assert (tmp_path / "score" / name).read_bytes() == (first_dir / "score" / name).read_bytes()


def test_no_temporary_files_left(with_survival):
    tmp_path, _ = with_survival
    leftovers = [p for p in (tmp_path / "score").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_missing_column_raises_and_writes_nothing(tmp_path):
    with pytest.raises(WSIPipelineError, match="'score'"):
        run(tmp_path, make_predictions().drop(columns="score"))
    assert not (tmp_path / "score" / "metrics.json").exists()


def test_duplicate_patient_model_raises(tmp_path):
    df = make_predictions()
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(WSIPipelineError, match="more than once"):
        run(tmp_path, df)


def test_single_class_model_gives_null_auc_not_a_crash(tmp_path):
    df = make_predictions(n_patients=30)
    df["label"] = 1
    metrics = run(tmp_path, df, n_resamples=20)
    assert metrics["abmil"]["auc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert metrics["abmil"]["accuracy"]["value"] is not None
    assert "n/a" in (tmp_path / "score" / "report.md").read_text()
    assert (tmp_path / "score" / "plots" / "roc.png").exists()


def test_different_patient_sets_are_noted(tmp_path):
    df = make_predictions(n_patients=30)
    df = df[~((df["model"] == "meanpool") & (df["patient_id"] == "P000"))]
    run(tmp_path, df, n_resamples=20)
    assert "different sets of patients" in (tmp_path / "score" / "report.md").read_text()


def test_load_then_score_from_csv(tmp_path):
    path = tmp_path / "predictions.csv"
    make_predictions(n_patients=30).to_csv(path, index=False)
    metrics = run(tmp_path, load_predictions(path), n_resamples=20)
    assert set(metrics) == {"abmil", "meanpool"}


def test_slide_level_predictions_are_scored_per_slide_with_a_patient_bootstrap(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat(rng.integers(0, 2, 20), 3)  # 20 patients of 3 slides, a slide carries its patient's label
    table = pd.DataFrame({
        "patient_id": np.repeat([f"P{i:02d}" for i in range(20)], 3),
        "slide_id": [f"s{j}" for j in range(60)],
        "model": "abmil",
        "fold": np.repeat(np.arange(20) % 5, 3),
        "label": labels,
        "score": 1 / (1 + np.exp(-rng.normal(labels - 0.5, 1.0))),
    })
    metrics = run(tmp_path, table, seed=4)["abmil"]

    assert (metrics["n_slides"], metrics["n_patients"], metrics["n_positive"]) == (60, 20, int(labels.sum()))
    task = BinaryTask()
    columns = {"label": table["label"].to_numpy(), "score": table["score"].to_numpy()}
    expected = {
        grouped: bootstrap_task_metrics([columns], task.metrics, task.metric_names, n_resamples=N_RESAMPLES, seed=4,
                                        groups=table["patient_id"].to_numpy() if grouped else None)["auc"][0].as_dict()
        for grouped in (True, False)
    }
    assert expected[True] != expected[False]  # the check below tells patient from slide resampling
    assert metrics["auc"] == pytest.approx(expected[True])
    report = (tmp_path / "score" / "report.md").read_text()
    assert "**evaluation**: slide-level: 60 slides of 20 patients" in report
    assert "A resample draws patients, each with all their slides" in report
    assert "| Slides | Patients |" in report
