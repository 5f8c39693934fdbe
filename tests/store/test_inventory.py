"""Listing a store: every tiling and feature entry, complete or not, on disk and on fsspec URLs."""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pytest
import zarr

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.store import FeatureStore, features_key, tiling_key
from wsi_pipeline.store.inventory import list_entries

TILING = "0.5um_256px_abc123"
ENCODER = "demo-0123456789ab"


def build_store(root, slides=("s1", "s2"), rows=300, dim=16):
    """Two slides tiled and embedded, one more embedding left half-written; a held claim makes ``.locks``."""
    store = FeatureStore(root)
    rng = np.random.default_rng(0)
    for slide in slides:
        entry = f"{slide}uid_0.25um"
        with store.claim(tiling_key(TILING, entry)):
            store.write_tiling(
                TILING, entry, np.column_stack([np.arange(rows) * 512, np.zeros(rows)]),
                {"tissue_fraction": rng.random(rows)}, {"slide_id": slide, "tile_px": 256},
            )
        writer = store.begin_features(ENCODER, TILING, entry, rows, dim, {"encoder": "demo", "slide_id": slide})
        writer.write(rng.normal(size=(rows, dim)))
        writer.complete()
    writer = store.begin_features("other-enc", TILING, f"{slides[0]}uid_0.25um", rows, dim, {"encoder": "other"})
    writer.write(np.ones((10, dim)))  # never completed
    return store


def test_lists_every_entry_complete_or_not_with_its_provenance(tmp_path):
    build_store(tmp_path / "store")
    assert (tmp_path / "store" / ".locks").is_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # .locks is never even looked at (zarr would warn about it)
        entries = list_entries(str(tmp_path / "store"))
    assert [e.key for e in entries] == [
        tiling_key(TILING, "s1uid_0.25um"),
        tiling_key(TILING, "s2uid_0.25um"),
        features_key(ENCODER, TILING, "s1uid_0.25um"),
        features_key(ENCODER, TILING, "s2uid_0.25um"),
        features_key("other-enc", TILING, "s1uid_0.25um"),
    ]
    by_key = {e.key: e for e in entries}
    tiling = by_key[tiling_key(TILING, "s2uid_0.25um")]
    assert (tiling.kind, tiling.encoder_id, tiling.tiling_id, tiling.slide, tiling.slide_id) == (
        "tiling", None, TILING, "s2uid_0.25um", "s2")
    assert (tiling.rows, tiling.dim, tiling.complete) == (300, None, True)
    assert tiling.attrs["tile_px"] == 256 and tiling.attrs["coords_sha256"]
    features = by_key[features_key(ENCODER, TILING, "s1uid_0.25um")]
    assert (features.kind, features.encoder_id, features.rows, features.dim, features.complete) == ("features", ENCODER, 300, 16, True)
    assert features.attrs["encoder"] == "demo" and features.slide_id == "s1"
    half = by_key[features_key("other-enc", TILING, "s1uid_0.25um")]
    assert half.complete is False and half.rows == 300 and half.dim == 16
    assert all(".locks" not in e.key for e in entries)
    assert features.to_dict()["attrs"]["encoder"] == "demo"


def test_lists_entries_of_a_memory_store_and_skips_its_locks():
    root = f"memory://inventory-{uuid.uuid4().hex}"
    build_store(root, slides=("m1",))
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
    fs.makedirs(f"{base}/.locks", exist_ok=True)
    fs.pipe(f"{base}/.locks/stale.claim", b"{}")
    entries = list_entries(root)
    assert sorted(e.key for e in entries) == sorted([
        tiling_key(TILING, "m1uid_0.25um"),
        features_key(ENCODER, TILING, "m1uid_0.25um"),
        features_key("other-enc", TILING, "m1uid_0.25um"),
    ])
    assert [e.complete for e in entries if e.encoder_id == ENCODER] == [True]


def test_skips_what_is_not_an_entry(tmp_path):
    root = tmp_path / "store"
    build_store(root, slides=("s1",))
    (root / "features" / ENCODER / TILING / "notes.txt").write_text("not an entry")
    (root / "features" / ENCODER / TILING / "empty-folder").mkdir()
    (root / "tiling" / "README").write_text("stray")
    zarr.open_group(str(root), mode="a")[f"features/{ENCODER}/{TILING}"].create_array("an-array", shape=(3,), dtype="int8")
    keys = [e.key for e in list_entries(str(root))]
    assert keys == [tiling_key(TILING, "s1uid_0.25um"), features_key(ENCODER, TILING, "s1uid_0.25um"),
                    features_key("other-enc", TILING, "s1uid_0.25um")]


def test_an_entry_with_unreadable_metadata_is_listed_not_complete(tmp_path):
    root = tmp_path / "store"
    build_store(root, slides=("s1",))
    (root / "features" / ENCODER / TILING / "s1uid_0.25um" / "zarr.json").write_text("{half written")
    entry = {e.key: e for e in list_entries(str(root))}[features_key(ENCODER, TILING, "s1uid_0.25um")]
    assert entry.complete is False and "metadata unreadable" in entry.error


def test_an_empty_store_lists_nothing(tmp_path):
    FeatureStore(tmp_path / "store").prepare()
    assert list_entries(str(tmp_path / "store")) == []


def test_a_missing_store_or_a_folder_that_is_not_one_is_an_error(tmp_path):
    with pytest.raises(WSIPipelineError, match="does not exist") as error:
        list_entries(str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in str(error.value)
    (tmp_path / "plain").mkdir()
    with pytest.raises(WSIPipelineError, match="not a feature store"):
        list_entries(str(tmp_path / "plain"))
