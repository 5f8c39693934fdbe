"""The multiclass, regression and survival demo workflows, end to end on tiny synthetic cohorts.

Each variant generates its own synthetic cohort (the targets follow the workflow's task type),
tiles, embeds with the demo encoder, cross-validates and scores, on a real Dask cluster; the
checks are the output contract of each task: predictions.csv columns, metrics.json keys,
finite values, the task's plots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.runner import EXIT_OK, run_pipeline

REPO = Path(__file__).resolve().parents[2]

#: As small as a run can be and still train: 12 patients of one 1024² slide, 2 folds, 3 epochs.
TINY = {
    "model": {"max_epochs": 3, "patience": 2, "hidden_dim": 32},
    "validation": {"n_folds": 2},
    "scoring": {"bootstrap_resamples": 100},
}
COHORT = {"synthetic": {"n_patients": 12, "two_slide_fraction": 0.0, "width": 1024, "height": 1024, "n_levels": 3}}

EXPECTED = {
    "demo_multiclass": {
        "columns": ["patient_id", "model", "repeat", "fold", "label", "prob_0", "prob_1", "prob_2", "predicted",
                    "pfs_months", "event", "encoder"],
        "metrics": {"macro_auc", "accuracy", "balanced_accuracy", "macro_f1"},
        # Per-class metrics (bootstrapped, but undefined on some resamples of 12 patients) and the confusion matrix.
        "counts": {"n_per_class", "confusion", *(f"{m}_{c}" for m in ("precision", "recall", "f1", "auc") for c in "012")},
        "plots": {"roc.png", "confusion_abmil.png", "confusion_meanpool.png"},
    },
    "demo_regression": {
        "columns": ["patient_id", "model", "repeat", "fold", "target", "prediction", "pfs_months", "event", "encoder"],
        "metrics": {"mae", "rmse", "r2", "pearson", "spearman"},
        "counts": set(),
        "plots": {"scatter.png"},
    },
    "demo_survival": {
        "columns": ["patient_id", "model", "repeat", "fold", "pfs_months", "event", "risk", "encoder"],
        "metrics": {"c_index"},
        "counts": {"n_events", "logrank_p", "hazard_ratio", "risk_groups"},
        "plots": {"km_abmil.png", "km_meanpool.png"},
    },
}


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=120)


@pytest.mark.slow
@pytest.mark.parametrize("workflow", sorted(EXPECTED))
def test_task_variant_runs_end_to_end(tmp_path, workflow):
    manifest = {
        "workflow": str(REPO / "workflows" / f"{workflow}.yaml"),
        "cohort": COHORT,
        "output": "out",
        "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "seed": 3,
        "overrides": TINY,
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    config = load_run_config(path)
    result = run_pipeline(config, console=quiet())
    assert result.exit_code == EXIT_OK, [f.reason for f in result.record.failures]
    out = config.output_dir
    expected = EXPECTED[workflow]

    predictions = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert list(predictions.columns) == expected["columns"]
    assert len(predictions) == 12 * 2 and set(predictions["repeat"]) == {0}
    assert not predictions.drop(columns=["predicted"], errors="ignore").isna().any().any()

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"abmil", "meanpool", "comparisons"}
    [comparison] = metrics.pop("comparisons")  # abmil against the mean-pool baseline, on the task's headline metric
    assert (comparison["model"], comparison["reference"], comparison["n_patients"]) == ("abmil", "meanpool", 12)
    assert comparison["metric"] in expected["metrics"] and 0 < comparison["difference"]["p_value"] <= 1
    for entry in metrics.values():
        assert set(entry) == expected["metrics"] | expected["counts"] | {"n_patients", "per_fold"}
        assert [(f["repeat"], f["fold"]) for f in entry["per_fold"]] == [(0, 0), (0, 1)]
        for fold in entry["per_fold"]:  # each fold's metrics with their own bootstrap interval
            assert all(set(fold[name]) == {"value", "ci_low", "ci_high"} for name in expected["metrics"])
        assert entry["n_patients"] == 12
        for name in expected["metrics"]:
            interval = entry[name]
            assert set(interval) == {"value", "ci_low", "ci_high"}
            assert all(isinstance(v, float) and math.isfinite(v) for v in interval.values()), (name, interval)
            assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]

    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert plots == expected["plots"] | {"training_curves.png"}  # the train stage's figure sits beside the task's
    report = (out / "report.md").read_text()
    assert f"**task**: {workflow.split('_')[1]}" in report
    folds = pd.read_csv(out / "folds.csv", dtype={"patient_id": str})
    assert list(folds.columns) == ["repeat", "fold", "patient_id", "role"]
    record = json.loads((out / "run.json").read_text())
    trained = [item for item in record["items"] if item["stage"] == "train"]
    assert len(trained) == 2 * 2 and all(item["info"]["training"]["epochs_run"] >= 1 for item in trained)
    if workflow == "demo_survival":
        # The risk groups are split at the median risk of each model's inner-validation predictions,
        # never at a value taken from the test predictions.
        validation = pd.read_csv(out / "validation_predictions.csv", dtype={"patient_id": str})
        for model in ("abmil", "meanpool"):
            groups = metrics[model]["risk_groups"]
            assert groups["rule"] == "validation"
            assert groups["cutoff"] == pytest.approx(validation.loc[validation["model"] == model, "risk"].median())
        assert "the median predicted risk of the validation rows" in report
