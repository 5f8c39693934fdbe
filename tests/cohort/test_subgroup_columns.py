"""Columns kept for scoring.subgroups: through the cohort table, into predictions.csv, and refused where they cannot be."""

from __future__ import annotations

import pandas as pd
import pytest

from wsi_pipeline.cohort import load_cohort
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.external_bags import load_instance_table
from wsi_pipeline.mil.predictions import assemble_predictions

ROWS = [
    {"patient_id": "A", "slide_path": "a1.tif", "label": 1, "site": "X", "sex": "f", "stage": 2},
    {"patient_id": "A", "slide_path": "a2.tif", "label": 1, "site": "X", "sex": "f", "stage": 2},
    {"patient_id": "B", "slide_path": "b.tif", "label": 0, "site": "Y", "sex": "m", "stage": 3},
]


def write(tmp_path, rows) -> str:
    path = tmp_path / "cohort.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_kept_columns_reach_the_predictions_after_follow_up_and_site(tmp_path):
    cohort = load_cohort(write(tmp_path, ROWS), keep=["sex"])
    assert cohort.patients[["patient_id", "sex"]].values.tolist() == [["A", "f"], ["B", "m"]]
    assert "stage" not in cohort.patients.columns  # only the named columns are kept
    rows = [{"patient_id": p, "model": "m", "repeat": 0, "fold": 0, "label": y, "score": s} for p, y, s in (("A", 1, 0.8), ("B", 0, 0.3))]
    table = assemble_predictions(rows, cohort, "enc")
    assert list(table.columns) == ["patient_id", "model", "repeat", "fold", "label", "score", "site", "sex", "encoder"]
    assert table["sex"].tolist() == ["f", "m"] and table["site"].tolist() == ["X", "Y"]


def test_a_missing_or_conflicting_subgroup_column_names_the_setting(tmp_path):
    with pytest.raises(WSIPipelineError, match="no column 'grade', named in scoring.subgroups"):
        load_cohort(write(tmp_path, ROWS), keep=["grade"])
    conflicting = [*ROWS[:1], {**ROWS[1], "sex": "m"}, ROWS[2]]
    with pytest.raises(WSIPipelineError, match="column 'sex'"):
        load_cohort(write(tmp_path, conflicting), keep=["sex"])


def test_an_instance_table_never_reads_a_subgroup_column_as_a_feature(tmp_path):
    path = tmp_path / "bags.csv"
    pd.DataFrame({"bag_id": ["a", "a", "b", "c"], "label": [1, 1, 0, 1], "stage": [2, 2, 3, 1], "f0": [0.1, 0.2, 0.3, 0.4]}).to_csv(path, index=False)
    assert load_instance_table(path).source.feature_columns == ("stage", "f0")  # without the setting, a number is a feature
    loaded = load_instance_table(path, keep=["stage"])
    assert loaded.source.feature_columns == ("f0",)
    assert loaded.cohort.patients["stage"].tolist() == [2, 3, 1]
