"""A run's tables, built without Dask: the fold plan (folds.csv) and the predictions table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.cohort.table import load_cohort
from wsi_pipeline.config.workflow import ValidationConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.folds import (
    FOLD_COLUMNS,
    folds_frame,
    plan_run_folds,
    write_folds,
)
from wsi_pipeline.mil.predictions import assemble_predictions, write_predictions
from wsi_pipeline.mil.splits import FoldPlan, plan_folds


def labels_of(n: int) -> dict[str, int]:
    return {f"P{i:02d}": i % 2 for i in range(n)}


def test_run_folds_are_planned_on_sorted_patients_whatever_their_order():
    labels = labels_of(20)
    shuffled = dict(reversed(list(labels.items())))
    validation = ValidationConfig(n_folds=4, val_fraction=0.25)
    plans = plan_run_folds(shuffled, validation, seed=3)
    ids = sorted(labels)
    assert plans == plan_folds(ids, [labels[p] for p in ids], n_folds=4, val_fraction=0.25, seed=3)
    assert plan_run_folds(labels, validation, seed=3) == plans


def test_too_few_patients_for_the_folds_is_a_user_error():
    with pytest.raises(WSIPipelineError, match="n_folds"):
        plan_run_folds(labels_of(4), ValidationConfig(n_folds=3), seed=0)


def test_folds_csv_lists_every_patients_role_in_every_fold(tmp_path):
    plans = [
        FoldPlan(0, fit_ids=("a", "b"), val_ids=("c",), test_ids=("d",)),
        FoldPlan(1, fit_ids=("c", "d"), val_ids=("a",), test_ids=("b",)),
    ]
    path = write_folds(plans, tmp_path / "run" / "folds.csv")
    table = pd.read_csv(path, dtype={"patient_id": str})
    assert list(table.columns) == list(FOLD_COLUMNS)
    assert table.values.tolist() == [
        [0, 0, "a", "fit"], [0, 0, "b", "fit"], [0, 0, "c", "val"], [0, 0, "d", "test"],
        [0, 1, "c", "fit"], [0, 1, "d", "fit"], [0, 1, "a", "val"], [0, 1, "b", "test"],
    ]
    assert list(folds_frame([]).columns) == list(FOLD_COLUMNS)  # an empty plan still has the header
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["folds.csv"]  # no temporary file left


def write_table(folder, survival: bool):
    frame = pd.DataFrame(
        {"patient_id": ["P1", "P1", "P2", "P3"], "slide_path": ["a.tiff", "b.tiff", "c.tiff", "d.tiff"], "label": [1, 1, 0, 1]}
    )
    if survival:
        frame["pfs_months"] = [12.5, 12.5, 3.0, np.nan]
        frame["event"] = [0, 0, 1, np.nan]
    frame.to_csv(folder / "cohort.csv", index=False)
    return load_cohort(folder / "cohort.csv")


ROWS = [  # as two folds' tasks return them: per fold, test patients in plan order
    {"patient_id": "P2", "model": "meanpool", "repeat": 0, "fold": 0, "label": 0, "score": 0.4},
    {"patient_id": "P1", "model": "meanpool", "repeat": 0, "fold": 1, "label": 1, "score": 0.6},
    {"patient_id": "P2", "model": "abmil", "repeat": 0, "fold": 0, "label": 0, "score": 0.1},
    {"patient_id": "P1", "model": "abmil", "repeat": 0, "fold": 1, "label": 1, "score": 0.9},
]


def test_predictions_join_follow_up_and_name_the_encoder_sorted_by_model_then_patient(tmp_path):
    cohort = write_table(tmp_path, survival=True)
    table = assemble_predictions(ROWS, cohort, "demo-resnet18-random-abc123")
    assert list(table.columns) == ["patient_id", "model", "repeat", "fold", "label", "score", "pfs_months", "event", "encoder"]
    assert table[["model", "patient_id"]].values.tolist() == [["abmil", "P1"], ["abmil", "P2"], ["meanpool", "P1"], ["meanpool", "P2"]]
    assert table["score"].tolist() == [0.9, 0.1, 0.6, 0.4]
    assert table["pfs_months"].tolist() == [12.5, 3.0, 12.5, 3.0] and table["event"].tolist() == [0, 1, 0, 1]
    assert set(table["encoder"]) == {"demo-resnet18-random-abc123"}
    assert "P3" not in set(table["patient_id"])  # patients without predictions are not added

    path = write_predictions(table, tmp_path / "predictions.csv")
    from wsi_pipeline.scoring.predictions import load_predictions

    back = load_predictions(path)
    assert back[["patient_id", "model", "score", "pfs_months"]].values.tolist() == table[["patient_id", "model", "score", "pfs_months"]].values.tolist()


def test_predictions_without_follow_up_have_only_the_prediction_and_encoder_columns(tmp_path):
    table = assemble_predictions(ROWS, write_table(tmp_path, survival=False), "enc")
    assert list(table.columns) == ["patient_id", "model", "repeat", "fold", "label", "score", "encoder"]


def test_rows_without_an_id_column_are_refused(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "repeat"} for row in ROWS]
    with pytest.raises(ValueError, match="repeat"):
        assemble_predictions(rows, write_table(tmp_path, survival=False), "enc")


def test_slide_level_predictions_keep_their_slide_ids_sorted_within_each_patient(tmp_path):
    rows = [
        {"patient_id": "P1", "slide_id": "b", "model": "abmil", "repeat": 0, "fold": 1, "label": 1, "score": 0.7},
        {"patient_id": "P2", "slide_id": "c", "model": "abmil", "repeat": 0, "fold": 0, "label": 0, "score": 0.2},
        {"patient_id": "P1", "slide_id": "a", "model": "abmil", "repeat": 0, "fold": 1, "label": 1, "score": 0.9},
    ]
    table = assemble_predictions(rows, write_table(tmp_path, survival=True), "enc")
    assert list(table.columns[:2]) == ["patient_id", "slide_id"]
    assert table[["patient_id", "slide_id", "pfs_months"]].values.tolist() == [["P1", "a", 12.5], ["P1", "b", 12.5], ["P2", "c", 3.0]]
    from wsi_pipeline.scoring.predictions import load_predictions

    back = load_predictions(write_predictions(table, tmp_path / "predictions.csv"))
    assert back[["patient_id", "slide_id", "score"]].values.tolist() == [["P1", "a", 0.9], ["P1", "b", 0.7], ["P2", "c", 0.2]]
