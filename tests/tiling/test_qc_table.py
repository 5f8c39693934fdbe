"""The cohort QC table: flags on a crafted cohort, the one-line summary, the CSV."""

from __future__ import annotations

import pandas as pd
import pytest

from wsi_pipeline.tiling.qc_table import (
    QC_TABLE_COLUMNS,
    qc_frame,
    tiles_summary,
    write_qc_table,
)


def row(slide_id: str, **values) -> dict:
    """A healthy slide's row, with ``values`` overriding it."""
    base = {
        "slide_id": slide_id,
        "slide_uid": f"uid-{slide_id}",
        "status": "done",
        "reason": None,
        "slide_mpp": 0.25,
        "target_mpp": 0.5,
        "modality": "brightfield",
        "tissue_area_mm2": 64.0,
        "pen_area_mm2": 0.5,
        "n_grid_tiles": 2000,
        "n_kept": 400,
        "dropped_tissue": 1500,
        "dropped_pen": 3,
        "dropped_blur": 2,
        "n_blurred": 10,
        "median_blur": 80.0,
    }
    base.update(values)
    return base


NORMAL_AREAS = [52.0, 58.0, 61.0, 64.0, 67.0, 70.0, 73.0, 79.0]
NORMAL_KEPT = [300, 320, 340, 360, 380, 400, 1204, 420]
FAILED = dict.fromkeys(
    ["slide_uid", "slide_mpp", "tissue_area_mm2", "pen_area_mm2", "n_grid_tiles", "n_kept", "dropped_tissue",
     "dropped_pen", "dropped_blur", "n_blurred", "median_blur"]
)  # fmt: skip


@pytest.fixture
def cohort() -> pd.DataFrame:
    rows = [row(f"n{i}", tissue_area_mm2=a, n_kept=k) for i, (a, k) in enumerate(zip(NORMAL_AREAS, NORMAL_KEPT))]
    rows += [
        row("f", status="failed", reason="OpenSlideError: unreadable", **FAILED),
        row("nt", tissue_area_mm2=0.0, pen_area_mm2=0.0, n_kept=0, dropped_pen=0, dropped_blur=0, n_blurred=0, median_blur=None),
        row("pen", tissue_area_mm2=60.0, pen_area_mm2=70.0, n_kept=350, dropped_pen=200),
        row("blur", tissue_area_mm2=65.0, n_kept=300, dropped_blur=50, n_blurred=120, median_blur=9.0),
        row("big", tissue_area_mm2=900.0, n_kept=450),
        row("few", tissue_area_mm2=62.0, n_kept=20, n_blurred=1),
    ]
    return qc_frame(rows)


def test_each_flag_is_raised_by_its_own_row_only(cohort):
    flags = dict(zip(cohort["slide_id"], cohort["flags"]))
    assert flags == {
        **{f"n{i}": "" for i in range(len(NORMAL_AREAS))},
        "f": "failed",
        "nt": "no_tissue",
        "pen": "mostly_pen",
        "blur": "blurred",
        "big": "tissue_area_outlier",
        "few": "few_tiles",
    }


def test_columns_and_types(cohort):
    assert tuple(cohort.columns) == QC_TABLE_COLUMNS
    assert str(cohort["n_kept"].dtype) == "Int64" and cohort["n_kept"].isna().sum() == 1  # the failed slide
    assert cohort["tissue_area_mm2"].dtype == "float64"
    assert cohort.loc[cohort["slide_id"] == "f", "reason"].item() == "OpenSlideError: unreadable"


def test_flags_combine_and_dropped_pen_alone_is_enough():
    rows = [row(f"n{i}", tissue_area_mm2=a, n_kept=k) for i, (a, k) in enumerate(zip(NORMAL_AREAS, NORMAL_KEPT))]
    rows += [
        row("inked", pen_area_mm2=0.1, n_kept=100, dropped_pen=150),  # little pen area, many tiles inked
        row("bad", tissue_area_mm2=0.0, pen_area_mm2=5.0, n_kept=0, dropped_pen=40, dropped_blur=0, n_blurred=0),
    ]
    flags = dict(zip(*qc_frame(rows)[["slide_id", "flags"]].to_numpy().T))
    assert flags["inked"] == "mostly_pen"
    assert flags["bad"] == "no_tissue;mostly_pen"


def test_cohort_flags_need_five_slides_and_a_real_difference():
    small = qc_frame([row("a"), row("b"), row("c"), row("d", tissue_area_mm2=900.0, n_kept=5, n_blurred=0)])
    assert small["flags"].tolist() == ["", "", "", ""]  # 4 slides: no cohort rule applies
    # Identical areas make the MAD 0; a slide 20 % off is still no outlier (less than 2 times off).
    uniform = qc_frame([row(f"s{i}") for i in range(6)] + [row("near", tissue_area_mm2=64.0 * 1.2), row("far", tissue_area_mm2=64.0 * 3)])
    assert dict(zip(uniform["slide_id"], uniform["flags"])) == {
        **{f"s{i}": "" for i in range(6)},
        "near": "",
        "far": "tissue_area_outlier",
    }


def test_unknown_numbers_raise_no_flag():
    frame = qc_frame([{"slide_id": "x", "status": "done"}])  # every number missing
    assert frame["flags"].tolist() == [""]
    assert tuple(frame.columns) == QC_TABLE_COLUMNS


def test_summary_line(cohort):
    assert tiles_summary(cohort) == (
        "tiles kept per slide: min 0, median 350, max 1,204 (13 slides); no tiles: nt; failed: f"
    )


def test_summary_without_empty_slides_and_with_a_half_median():
    frame = qc_frame([row("a", n_kept=12, n_blurred=0), row("b", n_kept=341), row("c", n_kept=340), row("d", n_kept=1204)])
    assert tiles_summary(frame) == "tiles kept per slide: min 12, median 340.5, max 1,204 (4 slides); all slides have tiles"


def test_summary_names_at_most_ten_slides():
    frame = qc_frame([row("ok")] + [row(f"e{i:02d}", n_kept=0) for i in range(12)])
    assert tiles_summary(frame).endswith("no tiles: e00, e01, e02, e03, e04, e05, e06, e07, e08, e09 and 2 more")


def test_empty_and_one_slide_cohorts(tmp_path):
    empty = qc_frame([])
    assert tuple(empty.columns) == QC_TABLE_COLUMNS and len(empty) == 0
    assert tiles_summary(empty) == "tiles kept per slide: no slide tiled"
    write_qc_table(tmp_path / "empty.csv", empty)
    assert list(pd.read_csv(tmp_path / "empty.csv").columns) == list(QC_TABLE_COLUMNS)

    one = qc_frame([row("solo", n_kept=5, n_blurred=0)])
    assert one["flags"].tolist() == [""]
    assert tiles_summary(one) == "tiles kept per slide: min 5, median 5, max 5 (1 slide); all slides have tiles"
    only_failed = qc_frame([row("f", status="failed", reason="boom", **FAILED)])
    assert only_failed["flags"].tolist() == ["failed"]
    assert tiles_summary(only_failed) == "tiles kept per slide: no slide tiled; failed: f"


def test_csv_is_written_atomically_and_reads_back(cohort, tmp_path):
    path = write_qc_table(tmp_path / "qc" / "tiles_qc.csv", cohort)
    assert list(path.parent.iterdir()) == [path]
    back = pd.read_csv(path, dtype={"flags": str, "reason": str}).fillna({"flags": ""})
    assert list(back.columns) == list(cohort.columns)
    assert back["flags"].tolist() == cohort["flags"].tolist()
    assert back["n_kept"].tolist()[:8] == NORMAL_KEPT
    assert back.loc[back["slide_id"] == "big", "tissue_area_mm2"].item() == 900.0


def test_extra_keys_are_kept_before_flags():
    frame = qc_frame([row("a", tiling_id="1um_256px_abc")])
    assert list(frame.columns)[-2:] == ["tiling_id", "flags"]
    assert frame["tiling_id"].item() == "1um_256px_abc"
