"""The Zarr feature store: round trips, provenance, completion semantics."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.store import FeatureStore, features_key, short_hash, tiling_key
from wsi_pipeline.store.checksum import rows_sha256


def test_tiling_round_trip_with_provenance(tmp_path):
    store = FeatureStore(tmp_path / "store")
    coords = np.array([[0, 0], [256, 0], [512, 256]], dtype=np.int64)
    fraction = np.array([0.5, 0.75, 1.0], dtype=np.float32)
    blur = np.array([300.0, 12.5, 800.0], dtype=np.float32)
    tissue = np.zeros((6, 9), dtype=bool)
    tissue[1:4, 2:7] = True
    store.write_tiling(
        "t1", "uid1", coords, {"tissue_fraction": fraction, "blur": blur}, {"slide_mpp": 0.25, "slide_path": "/x.svs"},
        masks={"tissue": tissue, "pen": np.zeros_like(tissue)},
    )
    entry = FeatureStore(tmp_path / "store").read_tiling("t1", "uid1")
    np.testing.assert_array_equal(entry.coords, coords)
    np.testing.assert_array_equal(entry.tissue_fraction, fraction)
    np.testing.assert_array_equal(entry.columns["blur"], blur)
    assert list(entry.columns) == ["tissue_fraction", "blur"]
    masks = FeatureStore(tmp_path / "store").read_tiling_masks("t1", "uid1")
    np.testing.assert_array_equal(masks["tissue"], tissue)
    assert masks["pen"].dtype == bool and not masks["pen"].any()
    assert entry.attrs["slide_mpp"] == 0.25 and entry.attrs["slide_path"] == "/x.svs"
    assert entry.attrs["complete"] is True and entry.attrs["n_tiles"] == 3
    assert "package_version" in entry.attrs and "created" in entry.attrs


def test_features_round_trip_as_float16(tmp_path):
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2500, 16)).astype(np.float32)
    writer = store.begin_features("enc-abc", "t1", "uid1", n_rows=2500, dim=16, attrs={"encoder": "enc", "weights_sha256": "abc"})
    for start in range(0, 2500, 700):
        writer.write(features[start : start + 700])
    writer.complete()
    entry = store.read_features("enc-abc", "t1", "uid1")
    assert entry.features.dtype == np.float16 and entry.features.shape == (2500, 16)
    np.testing.assert_allclose(entry.features, features, rtol=1e-3, atol=1e-3)
    assert entry.attrs["encoder"] == "enc" and entry.attrs["weights_sha256"] == "abc"
    assert entry.attrs["complete"] is True and entry.attrs["dim"] == 16
    # the layout is the documented one, readable with plain zarr
    raw = zarr.open_group(str(tmp_path / "store"), mode="r")[features_key("enc-abc", "t1", "uid1")]
    assert raw["features"].chunks[0] <= 1024


def test_incomplete_features_are_invisible_and_rewritten(tmp_path):
    store = FeatureStore(tmp_path / "store")
    writer = store.begin_features("e", "t", "u", n_rows=10, dim=4, attrs={})
    writer.write(np.ones((5, 4)))
    key = features_key("e", "t", "u")
    assert not store.is_complete(key)
    with pytest.raises(RuntimeError, match="only 5 of 10"):
        writer.complete()
    assert not store.is_complete(key)
    with pytest.raises(WSIPipelineError, match="no complete features entry"):
        store.read_features("e", "t", "u")
    assert store.list_slides("features/e/t") == []
    writer = store.begin_features("e", "t", "u", n_rows=10, dim=4, attrs={})
    writer.write(np.full((10, 4), 2.0))
    writer.complete()
    assert store.list_slides("features/e/t") == ["u"]
    assert store.read_features("e", "t", "u").features.max() == 2


def test_writer_refuses_rows_past_the_end(tmp_path):
    writer = FeatureStore(tmp_path).begin_features("e", "t", "u", n_rows=3, dim=2, attrs={})
    with pytest.raises(ValueError, match="past"):
        writer.write(np.zeros((4, 2)))


def test_keys_and_hash():
    assert tiling_key("t", "u") == "tiling/t/u"
    assert short_hash({"a": 1, "b": 2}) == short_hash({"b": 2, "a": 1})
    assert short_hash({"a": 1}) != short_hash({"a": 2})


def test_columns_must_match_the_coordinates(tmp_path):
    store = FeatureStore(tmp_path / "store")
    with pytest.raises(ValueError, match="'blur' has 2 values for 3 tiles"):
        store.write_tiling("t1", "u", np.zeros((3, 2)), {"blur": np.zeros(2)}, {})


def test_slide_entry_names_carry_the_mpp():
    from wsi_pipeline.store.feature_store import slide_entry

    assert slide_entry("abc", 0.499) == "abc_0.499um"
    assert slide_entry("abc", 0.25) != slide_entry("abc", 0.5)


def test_features_reach_the_array_in_whole_chunks(tmp_path, monkeypatch):
    """Rows wait for a whole chunk, so each chunk is compressed and written once, not once per batch."""
    from wsi_pipeline.store import feature_store

    monkeypatch.setattr(feature_store, "FEATURE_ROWS_PER_CHUNK", 100)
    store = FeatureStore(tmp_path / "store")
    writer = store.begin_features("e", "t", "u", n_rows=250, dim=3, attrs={})
    writes = []
    array = writer._array

    class Recording:
        def __setitem__(self, key, value):
            writes.append((key.start, key.stop))
            array[key] = value

    writer._array = Recording()
    rows = np.arange(750, dtype=np.float32).reshape(250, 3)
    for start in range(0, 250, 30):
        writer.write(rows[start : start + 30])
        if start == 60:
            assert writes == []  # 90 rows held back: less than a chunk
    writer.complete()
    assert writes == [(0, 100), (100, 200), (200, 250)]
    np.testing.assert_array_equal(store.read_features("e", "t", "u").features, rows.astype(np.float16))


def test_features_record_the_coordinates_of_the_tiling_they_follow(tmp_path):
    store = FeatureStore(tmp_path / "store")
    coords = np.array([[0, 0], [512, 0], [0, 512]])
    store.write_tiling("t1", "slide_0.5um", coords, {"tissue_fraction": np.ones(3)}, {})
    writer = store.begin_features("enc", "t1", "slide_0.5um", 3, 4, {})
    writer.write(np.ones((3, 4)))
    writer.complete()
    recorded = store.attrs(features_key("enc", "t1", "slide_0.5um"))["tiling_coords_sha256"]
    assert recorded == store.attrs(tiling_key("t1", "slide_0.5um"))["coords_sha256"] == rows_sha256(coords, "int64")
    # No tiling entry (features brought in alone): nothing to record.
    store.begin_features("enc", "t1", "other_0.5um", 3, 4, {}).write(np.ones((3, 4)))
    assert "tiling_coords_sha256" not in store.attrs(features_key("enc", "t1", "other_0.5um"))


def test_an_invalidated_entry_is_incomplete_says_why_and_is_written_again(tmp_path):
    store = FeatureStore(tmp_path / "store")
    writer = store.begin_features("enc", "t1", "slide_0.5um", 2, 3, {})
    writer.write(np.ones((2, 3)))
    writer.complete()
    key = features_key("enc", "t1", "slide_0.5um")
    assert store.feature_keys_on("t1", "slide_0.5um") == [key] and store.feature_keys_on("t1", "nothing") == []
    store.invalidate(key, "its tiling entry was replaced")
    assert not store.is_complete(key)
    assert store.attrs(key)["invalidated"]["reason"] == "its tiling entry was replaced"
    with store.claim(key) as must_write:
        assert must_write
