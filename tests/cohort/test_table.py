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


def test_a_survival_cohort_keeps_time_and_event_and_excludes_patients_without_follow_up(tmp_path):
    from wsi_pipeline.mil.tasks import SurvivalTask

    path = write(tmp_path, [
        {"patient_id": "A", "slide_path": "a.tif", "label": 1, "pfs_months": 10.0, "event": 0},
        {"patient_id": "B", "slide_path": "b.tif", "label": 0, "pfs_months": 3.0, "event": 1},
        {"patient_id": "C", "slide_path": "c.tif", "label": 0, "pfs_months": None, "event": None},
    ])
    cohort = load_cohort(path, task=SurvivalTask())
    assert cohort.targets == {"A": (10.0, 0), "B": (3.0, 1)}
    assert set(cohort.excluded) == {"C"} and "no follow-up" in cohort.excluded["C"]
    assert len(cohort.slides) == 3  # C's slide is still tiled and embedded
    binary = load_cohort(path)  # for a binary task the follow-up is optional, not a target
    assert binary.excluded == {} and binary.patients["pfs_months"].isna().sum() == 1


def test_a_multiclass_cohort_takes_its_classes_from_the_table(tmp_path):
    from wsi_pipeline.mil.tasks import MulticlassTask

    path = write(tmp_path, [
        {"patient_id": "A", "slide_path": "a.tif", "label": "stroma"},
        {"patient_id": "B", "slide_path": "b.tif", "label": "tumour"},
        {"patient_id": "C", "slide_path": "c.tif", "label": "immune"},
    ])
    cohort = load_cohort(path, task=MulticlassTask())
    assert cohort.task.classes == ("immune", "stroma", "tumour")
    assert cohort.targets == {"A": "stroma", "B": "tumour", "C": "immune"}


def test_task_columns_are_named_with_the_setting_that_names_them(tmp_path):
    from wsi_pipeline.mil.tasks import RegressionConfig, RegressionTask

    path = write(tmp_path, [{"patient_id": "A", "slide_path": "a.tif", "label": 1, "site": "X"}])
    with pytest.raises(WSIPipelineError, match="missing column.*ki67") as caught:
        load_cohort(path, task=RegressionTask(RegressionConfig(target_column="ki67")))
    assert "task section" in caught.value.fix and str(path) in caught.value.format()
    path = write(tmp_path, [{"patient_id": "A", "slide_path": "a.tif", "ki67": "high"}])
    with pytest.raises(WSIPipelineError, match="'ki67' is not a number.*patient A"):
        load_cohort(path, task=RegressionTask(RegressionConfig(target_column="ki67")))


def test_sites_are_kept_per_patient_and_must_agree(tmp_path):
    path = write(tmp_path, [
        {"patient_id": "A", "slide_path": "a1.tif", "label": 1, "site": "X"},
        {"patient_id": "A", "slide_path": "a2.tif", "label": 1, "site": "X"},
        {"patient_id": "B", "slide_path": "b.tif", "label": 0, "site": "Y"},
    ])
    assert load_cohort(path).sites == {"A": "X", "B": "Y"}
    path = write(tmp_path, [
        {"patient_id": "A", "slide_path": "a1.tif", "label": 1, "site": "X"},
        {"patient_id": "A", "slide_path": "a2.tif", "label": 1, "site": "Z"},
    ])
    with pytest.raises(WSIPipelineError, match="different labels: A \\(column 'site'\\)"):
        load_cohort(path)
