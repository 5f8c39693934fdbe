"""Synthetic cohort planning, the cohort table and sequential generation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.synthetic import (
    TABLE_COLUMNS,
    generate_cohort,
    plan_synthetic_cohort,
    write_cohort_table,
)


def test_plan_counts():
    plan = plan_synthetic_cohort(20, seed=4)
    patients = plan.patients
    assert list(patients.columns) == ["patient_id", "label", "pfs_months", "event"]
    assert patients["patient_id"].tolist() == [f"P{i:03d}" for i in range(20)]
    assert patients["label"].sum() == round(0.3 * 20)
    per_patient = pd.Series([entry.patient_id for entry in plan.slides]).value_counts()
    assert (per_patient == 2).sum() == round(0.25 * 20)
    assert set(per_patient) <= {1, 2} and len(per_patient) == 20
    assert len(plan.slides) == 25


def test_plan_slide_entries_follow_patients():
    plan = plan_synthetic_cohort(
        40, seed=7, positive_fraction=0.5, two_slide_fraction=0.5, width=1024, height=768, mpp=0.25, n_levels=5
    )
    labels = dict(zip(plan.patients["patient_id"], plan.patients["label"]))
    seen: dict[str, list[str]] = {}
    for entry in plan.slides:
        seen.setdefault(entry.patient_id, []).append(entry.slide_id)
        assert entry.filename == f"{entry.slide_id}.tiff"
        assert entry.spec.positive == bool(labels[entry.patient_id])  # both slides of a positive patient
        spec = entry.spec
        assert (spec.width, spec.height, spec.mpp, spec.n_levels) == (1024, 768, 0.25, 5)
        assert 0.10 <= entry.spec.signal_fraction <= 0.20
    for patient_id, slide_ids in seen.items():
        assert slide_ids == [f"{patient_id}_S{k}" for k in range(len(slide_ids))]
    seeds = [entry.spec.seed for entry in plan.slides]
    assert len(set(seeds)) == len(seeds)


def test_plan_is_deterministic_by_seed():
    a = plan_synthetic_cohort(30, seed=1)
    b = plan_synthetic_cohort(30, seed=1)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    assert a.slides == b.slides
    c = plan_synthetic_cohort(30, seed=2)
    assert not a.patients["label"].equals(c.patients["label"])
    assert {s.spec.seed for s in a.slides}.isdisjoint({s.spec.seed for s in c.slides})


def test_labels_do_not_move_when_only_slide_counts_change():
    a = plan_synthetic_cohort(50, seed=3, two_slide_fraction=0.0)
    b = plan_synthetic_cohort(50, seed=3, two_slide_fraction=0.6)
    assert a.patients["label"].equals(b.patients["label"])


def test_outcomes_depend_on_label():
    patients = plan_synthetic_cohort(200, seed=0).patients
    positive = patients[patients["label"] == 1]
    negative = patients[patients["label"] == 0]
    assert positive["pfs_months"].mean() > 1.5 * negative["pfs_months"].mean()
    assert set(patients["event"]) == {0, 1}  # some censoring, some progression
    assert 0.3 < patients["event"].mean() < 0.95
    assert (patients["pfs_months"] > 0).all()


def test_cohort_table(tmp_path):
    plan = plan_synthetic_cohort(12, seed=5)
    path = write_cohort_table(plan, tmp_path / "cohort")
    assert path == tmp_path / "cohort" / "cohort.csv"
    table = pd.read_csv(path)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == len(plan.slides)
    assert table["slide_id"].tolist() == [entry.slide_id for entry in plan.slides]
    for slide_path in table["slide_path"]:
        assert not Path(slide_path).is_absolute()
    merged = table.merge(plan.patients, on="patient_id", suffixes=("", "_patient"))
    assert (merged["label"] == merged["label_patient"]).all()
    assert np.allclose(merged["pfs_months"], merged["pfs_months_patient"])
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_generate_cohort_writes_missing_slides_only(tmp_path):
    kwargs = {"width": 512, "height": 512, "n_levels": 3, "positive_fraction": 0.5, "two_slide_fraction": 0.5}
    csv = generate_cohort(tmp_path, 2, seed=8, **kwargs)
    table = pd.read_csv(csv)
    assert len(table) == 3
    for slide_path in table["slide_path"]:
        with openslide.OpenSlide(str(csv.parent / slide_path)) as slide:
            assert slide.level_count == 3
    first = csv.parent / table["slide_path"][0]
    second = csv.parent / table["slide_path"][1]
    mtime = first.stat().st_mtime_ns
    before = second.read_bytes()
    second.unlink()
    os.utime(first, ns=(mtime - 10**9, mtime - 10**9))
    generate_cohort(tmp_path, 2, seed=8, **kwargs)
    assert first.stat().st_mtime_ns == mtime - 10**9  # present: skipped
    assert second.read_bytes() == before  # missing: regenerated, identically


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((0, 1), {}),
        ((10, -1), {}),
        ((10, 1), {"positive_fraction": 1.5}),
        ((10, 1), {"two_slide_fraction": -0.1}),
        ((10, 1), {"n_levels": 2}),
    ],
)
def test_invalid_plan_raises_project_error(args, kwargs):
    with pytest.raises(WSIPipelineError):
        plan_synthetic_cohort(*args, **kwargs)
