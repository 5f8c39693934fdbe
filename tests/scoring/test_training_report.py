"""The report on the train stage's record: the curves figure and training.csv, and nested CV's grid."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from wsi_pipeline.config import load_run_config
from wsi_pipeline.scoring.context import report_context
from wsi_pipeline.scoring.report import write_report


def test_the_report_shows_the_training_curves_and_points_to_training_csv_only_when_they_exist(tmp_path):
    preds = pd.DataFrame({"patient_id": ["a", "b"], "model": "m", "fold": [0, 1], "label": [0, 1], "score": [0.2, 0.7]})
    interval = {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    metrics = {"m": {"auc": interval, "accuracy": interval, "balanced_accuracy": interval, "n_patients": 2, "n_positive": 1}}

    alone = write_report(metrics, preds, tmp_path, title="T", context=None).read_text()
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "training_curves.png").write_bytes(b"png")
    with_training = write_report(metrics, preds, tmp_path, title="T", context=None).read_text()

    assert "training" not in alone.lower()  # a predictions file scored on its own has no training to show
    assert "### Training curves" in with_training and "(plots/training_curves.png)" in with_training
    assert "`training.csv`" in with_training and "load_fold_model" in with_training


def write_manifest(folder: Path, **overrides) -> Path:
    manifest = {"workflow": "demo", "cohort": {"synthetic": {"n_patients": 10}}, "output": "out", "overrides": overrides}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def test_the_run_context_states_the_grid_and_the_inner_folds(tmp_path):
    plain = report_context(load_run_config(write_manifest(tmp_path)))
    assert "model selection" not in plain.facts
    config = load_run_config(write_manifest(tmp_path, model={"grid": {"lr": [0.0001, 0.001], "max_instances": [64, None]}},
                                            validation={"inner_folds": 4}))
    fact = report_context(config).facts["model selection"]
    assert fact.startswith("nested CV over 4 combinations (lr 0.0001, 0.001; max_instances 64, None)")
    assert "4 inner folds" in fact and "training.csv" in fact
