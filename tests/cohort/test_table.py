"""Cohort table checks."""

from __future__ import annotations

import pandas as pd
import pytest

from wsi_pipeline.cohort import load_cohort
from wsi_pipeline.errors import WSIPipelineError


def write(tmp_path, rows, name="cohort.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_patients_and_slides(tmp_path):
    path = write(tmp_path, [
        {"patient_id": "A", "slide_path": "a1.tif", "label": 1, "pfs_months": 10.0, "event": 0},
        {"patient_id": "A", "slide_path": "a2.tif", "label": 1, "pfs_months": 10.0, "event": 0},
        {"patient_id": "B", "slide_path": "/abs/b.tif", "label": 0, "pfs_months": 3.0, "event": 1},
    ])
    cohort = load_cohort(path)
    assert cohort.labels == {"A": 1, "B": 0}
    assert list(cohort.slides["slide_id"]) == ["a1", "a2", "b"]
    records = cohort.slide_records()
    assert records[0].path == (tmp_path / "a1.tif").resolve()
    assert str(records[2].path) == "/abs/b.tif"
    assert records[0].mpp_override is None
    assert set(cohort.patients.columns) >= {"pfs_months", "event"}


def test_mpp_override_column(tmp_path):
    path = write(tmp_path, [{"patient_id": "A", "slide_path": "a.tif", "label": 0, "mpp": 0.25}])
    assert load_cohort(path).slide_records()[0].mpp_override == 0.25


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ([{"patient_id": "A", "label": 1}], "missing column.*slide_path"),
        ([{"patient_id": "A", "slide_path": "a", "label": 2}], "'label' is not 0 or 1"),
        ([{"patient_id": "A", "slide_path": "a", "label": 1}, {"patient_id": "B", "slide_path": "a", "label": 0}], "duplicate slide_id"),
        ([{"patient_id": "A", "slide_path": "a", "label": 1}, {"patient_id": "A", "slide_path": "b", "label": 0}], "different labels: A"),
    ],
)
def test_bad_tables_are_named(tmp_path, rows, pattern):
    path = write(tmp_path, rows)
    with pytest.raises(WSIPipelineError, match=pattern) as caught:
        load_cohort(path)
    assert str(path) in caught.value.format()
