"""``verify_store``: damage in complete entries is found and named; incomplete entries are not damage."""

from __future__ import annotations

import hashlib
import shutil
import uuid

import numpy as np
import pytest
import zarr

from wsi_pipeline.store import FeatureStore, features_key, tiling_key
from wsi_pipeline.store import feature_store as feature_store_module
from wsi_pipeline.store.verify import verify_store

TILING = "0.5um_256px_abc123"
ENCODER = "demo-0123456789ab"
ROWS, DIM = 300, 16


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """100-row feature chunks: three per entry, so one can be damaged while the others are fine."""
    monkeypatch.setattr(feature_store_module, "FEATURE_ROWS_PER_CHUNK", 100)


def entry_name(slide: str) -> str:
    return f"{slide}uid_0.25um"


def build_store(root, slides=("s1", "s2", "s3")):
    store = FeatureStore(root)
    rng = np.random.default_rng(1)
    for slide in slides:
        coords = np.column_stack([np.arange(ROWS) % 20 * 512, np.arange(ROWS) // 20 * 512])
        store.write_tiling(
            TILING, entry_name(slide), coords,
            {"tissue_fraction": rng.random(ROWS), "pen_fraction": np.zeros(ROWS)},  # all zeros: a chunk zarr would skip
            {"slide_id": slide}, masks={"tissue": rng.random((8, 8)) > 0.5, "pen": np.zeros((8, 8), bool)},
        )
        writer = store.begin_features(ENCODER, TILING, entry_name(slide), ROWS, DIM, {"encoder": "demo"})
        for start in range(0, ROWS, 64):
            writer.write(rng.normal(size=(min(64, ROWS - start), DIM)))
        writer.complete()
    return store


def feature_folder(root, slide="s2"):
    return root / "features" / ENCODER / TILING / entry_name(slide) / "features"


def verdicts(report):
    return {check.key: check.status for check in report.entries}


def test_a_clean_store_verifies_with_checksums(tmp_path):
    build_store(tmp_path / "store")
    report = verify_store(str(tmp_path / "store"))
    assert report.clean and len(report.ok) == 6 and not report.bad and not report.incomplete
    assert {check.checksum for check in report.entries} == {"verified"}
    assert report.to_dict()["counts"] == {"ok": 6, "bad": 0, "incomplete": 0, "without_checksum": 0}


def test_the_checksum_written_is_the_sha256_of_the_float16_rows_in_order(tmp_path):
    store = build_store(tmp_path / "store", slides=("s1",))
    entry = store.read_features(ENCODER, TILING, entry_name("s1"))
    expected = hashlib.sha256(np.ascontiguousarray(entry.features, dtype="<f2").tobytes()).hexdigest()
    assert entry.attrs["features_sha256"] == expected
    tiling = store.read_tiling(TILING, entry_name("s1"))
    assert tiling.attrs["coords_sha256"] == hashlib.sha256(tiling.coords.astype("<i8").tobytes()).hexdigest()


def test_every_chunk_is_written_even_all_zero_ones(tmp_path):
    build_store(tmp_path / "store", slides=("s1",))
    tiling = tmp_path / "store" / "tiling" / TILING / entry_name("s1")
    assert (tiling / "pen_fraction" / "c" / "0").is_file() and (tiling / "mask_pen" / "c" / "0" / "0").is_file()


def test_a_removed_feature_chunk_makes_that_entry_bad(tmp_path):
    build_store(tmp_path / "store")
    (feature_folder(tmp_path / "store") / "c" / "1" / "0").unlink()
    report = verify_store(str(tmp_path / "store"))
    bad_key = features_key(ENCODER, TILING, entry_name("s2"))
    assert [check.key for check in report.bad] == [bad_key]
    reasons = report.bad[0].reasons
    assert any("lacks 1 of 3 chunk(s) (c/1/0)" in reason for reason in reasons)
    assert any("features_sha256 mismatch" in reason for reason in reasons)
    assert verdicts(report)[features_key(ENCODER, TILING, entry_name("s1"))] == "ok"


def test_a_truncated_chunk_is_found(tmp_path):
    build_store(tmp_path / "store")
    chunk = feature_folder(tmp_path / "store") / "c" / "2" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    report = verify_store(str(tmp_path / "store"))
    assert [check.key for check in report.bad] == [features_key(ENCODER, TILING, entry_name("s2"))]
    assert "rows 200-299: a chunk cannot be decoded" in report.bad[0].reasons[0]


def test_an_array_resized_shorter_is_found(tmp_path):
    build_store(tmp_path / "store")
    zarr.open_group(str(tmp_path / "store"), mode="a")[features_key(ENCODER, TILING, entry_name("s3"))]["features"].resize((250, DIM))
    report = verify_store(str(tmp_path / "store"))
    assert [check.key for check in report.bad] == [features_key(ENCODER, TILING, entry_name("s3"))]
    assert "has shape (250, 16) where its attrs give (300, 16)" in report.bad[0].reasons[0]


def test_changed_values_fail_the_checksum(tmp_path):
    build_store(tmp_path / "store")
    array = zarr.open_group(str(tmp_path / "store"), mode="a")[features_key(ENCODER, TILING, entry_name("s1"))]["features"]
    array[5, 3] = array[5, 3] + 1
    report = verify_store(str(tmp_path / "store"))
    assert [check.key for check in report.bad] == [features_key(ENCODER, TILING, entry_name("s1"))]
    assert report.bad[0].checksum == "mismatch"
    assert report.bad[0].reasons == ["features_sha256 mismatch: the stored values differ from those written"]


def test_damaged_tiling_entries_are_found(tmp_path):
    build_store(tmp_path / "store")
    group = zarr.open_group(str(tmp_path / "store"), mode="a")
    group[tiling_key(TILING, entry_name("s1"))]["pen_fraction"].resize((299,))
    (tmp_path / "store" / "tiling" / TILING / entry_name("s2") / "mask_pen" / "c" / "0" / "0").unlink()
    report = verify_store(str(tmp_path / "store"))
    bad = {check.key: check.reasons for check in report.bad}
    assert set(bad) == {tiling_key(TILING, entry_name("s1")), tiling_key(TILING, entry_name("s2"))}
    assert "array 'pen_fraction' has shape (299,) where its attrs give (300,)" in bad[tiling_key(TILING, entry_name("s1"))]
    assert "array 'mask_pen' lacks 1 of 1 chunk(s)" in bad[tiling_key(TILING, entry_name("s2"))][0]


def test_features_must_have_a_complete_tiling_with_as_many_rows(tmp_path):
    store = build_store(tmp_path / "store")
    shutil.rmtree(tmp_path / "store" / "tiling" / TILING / entry_name("s1"))
    store.write_tiling(TILING, entry_name("s2"), np.zeros((299, 2)), {}, {})
    bad = {check.key: check.reasons for check in verify_store(str(tmp_path / "store")).bad}
    assert bad == {
        features_key(ENCODER, TILING, entry_name("s1")): [
            f"no complete tiling entry at tiling/{TILING}/{entry_name('s1')}: its rows have no coordinates"
        ],
        features_key(ENCODER, TILING, entry_name("s2")): ["300 feature rows but its tiling entry has 299 tiles"],
    }


def test_an_incomplete_entry_is_reported_not_bad(tmp_path):
    store = build_store(tmp_path / "store", slides=("s1",))
    writer = store.begin_features("other-enc", TILING, entry_name("s1"), ROWS, DIM, {})
    writer.write(np.ones((150, DIM)))
    report = verify_store(str(tmp_path / "store"))
    assert report.clean
    assert [check.key for check in report.incomplete] == [features_key("other-enc", TILING, entry_name("s1"))]


def test_entries_written_before_checksums_are_checked_without_them(tmp_path):
    build_store(tmp_path / "store", slides=("s1",))
    group = zarr.open_group(str(tmp_path / "store"), mode="a")
    features = group[features_key(ENCODER, TILING, entry_name("s1"))]
    tiling = group[tiling_key(TILING, entry_name("s1"))]
    del features.attrs["features_sha256"]
    del tiling.attrs["coords_sha256"]
    # an old writer skipped all-zero chunks: not damage in a QC column
    (tmp_path / "store" / "tiling" / TILING / entry_name("s1") / "pen_fraction" / "c" / "0").unlink()
    report = verify_store(str(tmp_path / "store"))
    assert report.clean and len(report.without_checksum) == 2
    notes = {check.key: check.notes for check in report.entries}
    assert any("written before checksums" in note for note in notes[features_key(ENCODER, TILING, entry_name("s1"))])
    assert any("'pen_fraction' lacks 1 of 1" in note for note in notes[tiling_key(TILING, entry_name("s1"))])
    # ...but a feature chunk is never all zeros, so its absence is damage even there
    (feature_folder(tmp_path / "store", "s1") / "c" / "0" / "0").unlink()
    report = verify_store(str(tmp_path / "store"))
    assert [check.key for check in report.bad] == [features_key(ENCODER, TILING, entry_name("s1"))]


def test_a_memory_store_verifies_and_a_lost_chunk_is_found():
    import fsspec

    root = f"memory://verify-{uuid.uuid4().hex}"
    build_store(root, slides=("m1",))
    assert verify_store(root).clean
    fs, base = fsspec.core.url_to_fs(root)
    fs.rm(f"{base}/{features_key(ENCODER, TILING, entry_name('m1'))}/features/c/0/0")
    report = verify_store(root)
    assert [check.key for check in report.bad] == [features_key(ENCODER, TILING, entry_name("m1"))]


def test_features_computed_on_other_coordinates_than_their_tiling_now_holds_are_bad(tmp_path):
    store = build_store(tmp_path / "store", slides=("s1", "s2"))
    tiling = store.attrs(tiling_key(TILING, entry_name("s1")))
    assert store.attrs(features_key(ENCODER, TILING, entry_name("s1")))["tiling_coords_sha256"] == tiling["coords_sha256"]
    # The same number of tiles elsewhere: only the recorded coordinates tell the rows are stale.
    shifted = store.read_tiling(TILING, entry_name("s1")).coords + 256
    store.write_tiling(TILING, entry_name("s1"), shifted, {}, {})
    bad = {check.key: check.reasons for check in verify_store(str(tmp_path / "store")).bad}
    assert bad == {
        features_key(ENCODER, TILING, entry_name("s1")): [
            (f"computed on other coordinates than tiling/{TILING}/{entry_name('s1')} holds now (that tiling entry was "
             "replaced since): its rows are not those tiles'")
        ]
    }
