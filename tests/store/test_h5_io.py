"""``.h5`` export and import: our files round-trip exactly; CLAM / TRIDENT files come in with an encoder id."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.store import FeatureStore, features_key, tiling_key
from wsi_pipeline.store import feature_store as feature_store_module
from wsi_pipeline.store.feature_store import slide_entry
from wsi_pipeline.store.h5_io import (
    FEATURE_BOOKKEEPING,
    TILING_BOOKKEEPING,
    export_h5,
    import_h5,
)
from wsi_pipeline.store.inventory import list_entries
from wsi_pipeline.store.verify import verify_store

TILING = "0.5um_256px_abc123"
ENCODER = "demo-0123456789ab"
ROWS, DIM = 300, 16
TILING_ATTRS = {
    "slide_mpp": 0.25, "read_level": 1, "target_mpp": 0.5, "effective_mpp": 0.5, "tile_px": 256, "tile_um": 128.0,
    "tile_size_level0": 512.0, "tiling_params": {"algorithm": "grid-v1", "overlap_px": 0}, "vendor": "aperio",
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(feature_store_module, "FEATURE_ROWS_PER_CHUNK", 100)


def build_store(root, slides=("s1", "s2"), encoders=(ENCODER,), seed=0):
    store = FeatureStore(root)
    rng = np.random.default_rng(seed)
    for slide in slides:
        entry = f"{slide}uid_0.25um"
        coords = np.column_stack([rng.permutation(ROWS) * 512, np.arange(ROWS) * 512])
        store.write_tiling(
            TILING, entry, coords, {"tissue_fraction": rng.random(ROWS), "blur": rng.random(ROWS) * 100},
            {**TILING_ATTRS, "slide_id": slide, "slide_path": f"/slides/{slide}.svs"},
            masks={"tissue": rng.random((6, 9)) > 0.5, "pen": np.zeros((6, 9), bool)},
        )
        for encoder in encoders:
            attrs = {"encoder": encoder.split("-")[0], "weights_sha256": "ab" * 32, "preprocessing": {"resize": 224}, "slide_id": slide}
            writer = store.begin_features(encoder, TILING, entry, ROWS, DIM, attrs)
            writer.write(rng.normal(size=(ROWS, DIM)) * 3)
            writer.complete()
    return store


def without(attrs, keys):
    return {key: value for key, value in attrs.items() if key not in keys and key != "imported_from"}


def test_export_writes_the_clam_trident_layout(tmp_path):
    store = build_store(tmp_path / "store")
    paths = export_h5(tmp_path / "store", tmp_path / "h5")
    assert [p.name for p in paths] == ["s1.h5", "s2.h5"] and all(p.parent == tmp_path / "h5" for p in paths)
    stored = store.read_features(ENCODER, TILING, "s1uid_0.25um")
    tiling = store.read_tiling(TILING, "s1uid_0.25um")
    with h5py.File(paths[0], "r") as h5:
        assert h5["features"].shape == (ROWS, DIM) and h5["features"].dtype == np.float32
        np.testing.assert_array_equal(h5["features"][...], stored.features.astype(np.float32))
        np.testing.assert_array_equal(h5["coords"][...], tiling.coords)
        attrs = dict(h5["coords"].attrs)
        assert (attrs["patch_size"], attrs["patch_size_level0"], attrs["patch_level"], attrs["level"]) == (256, 512, 1, 1)
        assert (attrs["target_mpp"], attrs["effective_mpp"], attrs["level0_magnification"], attrs["target_magnification"]) == (
            0.5, 0.5, 40.0, 20.0)
        assert attrs["name"] == "s1" and attrs["overlap"] == 0
        assert (h5.attrs["encoder_id"], h5.attrs["tiling_id"], h5.attrs["slide_entry"]) == (ENCODER, TILING, "s1uid_0.25um")
        assert json.loads(h5.attrs["feature_attrs"]) == stored.attrs
        assert json.loads(h5.attrs["tiling_attrs"]) == tiling.attrs


def test_export_then_import_gives_the_same_entries_bit_for_bit(tmp_path):
    source = build_store(tmp_path / "store")
    export_h5(tmp_path / "store", tmp_path / "h5")
    results = import_h5(tmp_path / "h5", tmp_path / "fresh")
    assert [(r.status, r.slide_from) for r in results] == [("imported", "provenance")] * 2
    assert [e.key for e in list_entries(str(tmp_path / "fresh"))] == [e.key for e in list_entries(str(tmp_path / "store"))]
    fresh = FeatureStore(tmp_path / "fresh")
    for slide in ("s1uid_0.25um", "s2uid_0.25um"):
        before, after = source.read_features(ENCODER, TILING, slide), fresh.read_features(ENCODER, TILING, slide)
        assert after.features.dtype == np.float16
        assert before.features.tobytes() == after.features.tobytes()
        assert without(after.attrs, FEATURE_BOOKKEEPING) == without(before.attrs, FEATURE_BOOKKEEPING)
        assert after.attrs["features_sha256"] == before.attrs["features_sha256"]
        assert after.attrs["imported_from"]["created"] == before.attrs["created"]
        tiling_before, tiling_after = source.read_tiling(TILING, slide), fresh.read_tiling(TILING, slide)
        np.testing.assert_array_equal(tiling_after.coords, tiling_before.coords)
        for name, values in tiling_before.columns.items():
            np.testing.assert_array_equal(tiling_after.columns[name], values)
        for name, mask in source.read_tiling_masks(TILING, slide).items():
            np.testing.assert_array_equal(fresh.read_tiling_masks(TILING, slide)[name], mask)
        assert without(tiling_after.attrs, TILING_BOOKKEEPING) == without(tiling_before.attrs, TILING_BOOKKEEPING)
        # what a run asks before computing: complete, so it would skip both stages
        for key in (tiling_key(TILING, slide), features_key(ENCODER, TILING, slide)):
            with fresh.claim(key) as must_write:
                assert must_write is False
    assert fresh.list_slides(f"features/{ENCODER}/{TILING}") == ["s1uid_0.25um", "s2uid_0.25um"]
    assert verify_store(str(tmp_path / "fresh")).clean


def test_importing_the_same_content_again_writes_nothing(tmp_path):
    build_store(tmp_path / "store", slides=("s1",))
    export_h5(tmp_path / "store", tmp_path / "h5")
    import_h5(tmp_path / "h5", tmp_path / "fresh")
    created = FeatureStore(tmp_path / "fresh").attrs(features_key(ENCODER, TILING, "s1uid_0.25um"))["completed_at"]
    assert [r.status for r in import_h5(tmp_path / "h5", tmp_path / "fresh")] == ["identical"]
    assert FeatureStore(tmp_path / "fresh").attrs(features_key(ENCODER, TILING, "s1uid_0.25um"))["completed_at"] == created


def test_importing_other_content_over_an_entry_needs_overwrite(tmp_path):
    build_store(tmp_path / "store", slides=("s1",), seed=0)
    build_store(tmp_path / "other", slides=("s1",), seed=7)
    export_h5(tmp_path / "other", tmp_path / "h5")
    with pytest.raises(WSIPipelineError, match="--overwrite") as error:
        import_h5(tmp_path / "h5", tmp_path / "store")
    assert "already has a complete tiling entry" in str(error.value) and "s1.h5" in str(error.value)
    results = import_h5(tmp_path / "h5", tmp_path / "store", overwrite=True)
    assert [r.status for r in results] == ["overwritten"]
    replaced = FeatureStore(tmp_path / "store").read_features(ENCODER, TILING, "s1uid_0.25um").features
    assert replaced.tobytes() == FeatureStore(tmp_path / "other").read_features(ENCODER, TILING, "s1uid_0.25um").features.tobytes()
    assert verify_store(str(tmp_path / "store")).clean


def test_overwriting_a_tiling_invalidates_the_other_encoders_features_on_it(tmp_path):
    other = "uni-fedcba987654"
    build_store(tmp_path / "store", slides=("s1", "s2"), encoders=(ENCODER, other), seed=0)
    build_store(tmp_path / "new", slides=("s1",), seed=7)  # other tiles for s1, features of ENCODER only
    export_h5(tmp_path / "new", tmp_path / "h5")
    (result,) = import_h5(tmp_path / "h5", tmp_path / "store", overwrite=True)
    store = FeatureStore(tmp_path / "store")
    stale = features_key(other, TILING, "s1uid_0.25um")
    assert result.status == "overwritten" and result.invalidated == (stale,)
    assert result.to_dict()["invalidated"] == [stale]
    assert not store.is_complete(stale) and "import-h5 --overwrite" in store.attrs(stale)["invalidated"]["reason"]
    # The imported encoder's entry and the other slide are untouched otherwise; the store verifies
    # clean (an incomplete entry is not damage), and a run would extract the stale one again.
    assert store.is_complete(features_key(ENCODER, TILING, "s1uid_0.25um"))
    assert store.is_complete(features_key(other, TILING, "s2uid_0.25um"))
    report = verify_store(str(tmp_path / "store"))
    assert report.clean and [check.key for check in report.incomplete] == [stale]
    # Importing it again changes nothing and invalidates nothing.
    assert [(r.status, r.invalidated) for r in import_h5(tmp_path / "h5", tmp_path / "store", overwrite=True)] == [("identical", ())]


def test_overwriting_features_alone_leaves_the_other_encoders_features_complete(tmp_path):
    other = "uni-fedcba987654"
    build_store(tmp_path / "store", slides=("s1",), encoders=(ENCODER, other), seed=0)
    export_h5(tmp_path / "store", tmp_path / "h5", encoder_id=ENCODER)
    with h5py.File(next((tmp_path / "h5").rglob("*.h5")), "a") as h5:
        h5["features"][0] += 1  # other features, same tiles (and no checksum that would refuse them)
        attrs = json.loads(h5.attrs["feature_attrs"])
        del attrs["features_sha256"]
        h5.attrs["feature_attrs"] = json.dumps(attrs)
    (result,) = import_h5(tmp_path / "h5", tmp_path / "store", overwrite=True)
    assert result.status == "overwritten" and result.invalidated == ()
    assert FeatureStore(tmp_path / "store").is_complete(features_key(other, TILING, "s1uid_0.25um"))


def test_two_encoders_go_to_subfolders_and_filters_pick_one(tmp_path):
    build_store(tmp_path / "store", encoders=(ENCODER, "uni-fedcba987654"))
    paths = export_h5(tmp_path / "store", tmp_path / "all")
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in paths) == [
        f"{ENCODER}/{TILING}/s1.h5", f"{ENCODER}/{TILING}/s2.h5", f"uni-fedcba987654/{TILING}/s1.h5", f"uni-fedcba987654/{TILING}/s2.h5",
    ]
    only = export_h5(tmp_path / "store", tmp_path / "uni", encoder_id="uni-fedcba987654")
    assert [p.relative_to(tmp_path / "uni").as_posix() for p in only] == ["s1.h5", "s2.h5"]
    with pytest.raises(WSIPipelineError, match="no complete feature entry for encoder nope") as error:
        export_h5(tmp_path / "store", tmp_path / "none", encoder_id="nope")
    assert f"--encoder uni-fedcba987654 --tiling {TILING}" in str(error.value)


def test_two_entries_of_one_slide_id_get_distinct_files(tmp_path):
    store = build_store(tmp_path / "store", slides=("s1",))
    store.write_tiling(TILING, "otheruid_0.25um", np.zeros((3, 2)), {}, {"slide_id": "s1"})
    writer = store.begin_features(ENCODER, TILING, "otheruid_0.25um", 3, DIM, {"slide_id": "s1"})
    writer.write(np.ones((3, DIM)))
    writer.complete()
    names = sorted(p.name for p in export_h5(tmp_path / "store", tmp_path / "h5"))
    assert names == ["s1.otheruid_0.25um.h5", "s1.s1uid_0.25um.h5"]


def write_clam_file(path, rows=40, dim=32, patch_size=256, seed=3):
    """A feature file as CLAM's extract_features_fp leaves it: no provenance, patch attrs on coords."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, dim)).astype(np.float32)
    coords = np.column_stack([np.arange(rows) * patch_size * 2, np.zeros(rows)]).astype(np.int64)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=features)
        dataset = h5.create_dataset("coords", data=coords)
        dataset.attrs.update({"patch_size": patch_size, "patch_level": 1, "downsample": np.array([2.0, 2.0]),
                              "name": path.stem, "save_path": "/elsewhere"})
    return features, coords


def test_a_clam_file_needs_an_encoder_id(tmp_path):
    (tmp_path / "clam").mkdir()
    write_clam_file(tmp_path / "clam" / "TCGA-01.h5")
    with pytest.raises(WSIPipelineError, match="--encoder-id") as error:
        import_h5(tmp_path / "clam", tmp_path / "store")
    assert "TCGA-01.h5" in str(error.value) and "no wsi-pipeline provenance" in str(error.value)
    assert not (tmp_path / "store").exists()  # nothing written


def test_a_clam_file_imports_under_the_given_encoder(tmp_path):
    (tmp_path / "clam").mkdir()
    features, coords = write_clam_file(tmp_path / "clam" / "TCGA-01.h5")
    write_clam_file(tmp_path / "clam" / "TCGA-02.h5", seed=4)
    results = import_h5(tmp_path / "clam", tmp_path / "store", encoder_id="uni-external")
    first = results[0]
    assert first.tiling_id == results[1].tiling_id and first.tiling_id.startswith("h5_256px_")
    assert (first.slide, first.slide_from, first.status) == ("TCGA-01", "file name", "imported")
    store = FeatureStore(tmp_path / "store")
    entry = store.read_features("uni-external", first.tiling_id, "TCGA-01")
    np.testing.assert_array_equal(entry.features, features.astype(np.float16))
    tiling = store.read_tiling(first.tiling_id, "TCGA-01")
    np.testing.assert_array_equal(tiling.coords, coords)
    assert (tiling.attrs["tile_px"], tiling.attrs["read_level"], tiling.attrs["tile_size_level0"]) == (256, 1, 512.0)
    assert tiling.attrs["h5_coords_attrs"]["save_path"] == "/elsewhere"
    assert verify_store(str(tmp_path / "store")).clean
    # other patch attrs, another tiling id; a given tiling id wins
    write_clam_file(tmp_path / "TCGA-03.h5", patch_size=512)
    (other,) = import_h5(tmp_path / "TCGA-03.h5", tmp_path / "store", encoder_id="uni-external")
    assert other.tiling_id.startswith("h5_512px_") and other.tiling_id != first.tiling_id
    (given,) = import_h5(tmp_path / "TCGA-03.h5", tmp_path / "store", encoder_id="uni-external", tiling_id="mine")
    assert given.key == features_key("uni-external", "mine", "TCGA-03")


def test_a_trident_file_keeps_its_level0_patch_size(tmp_path):
    rows = 10
    with h5py.File(tmp_path / "slide-7.h5", "w") as h5:
        h5.create_dataset("features", data=np.ones((rows, 8), np.float32))
        coords = h5.create_dataset("coords", data=np.arange(rows * 2).reshape(rows, 2))
        coords.attrs.update({"patch_size": 224, "patch_size_level0": 448, "level0_magnification": 40,
                             "target_magnification": 20, "overlap": 0, "name": "slide-7", "savetodir": "/x"})
    (result,) = import_h5(tmp_path / "slide-7.h5", tmp_path / "store", encoder_id="conch-1")
    attrs = FeatureStore(tmp_path / "store").attrs(result.tiling_key)
    assert attrs["tile_size_level0"] == 448 and attrs["tile_px"] == 224


def test_slides_folder_names_entries_by_slide_content(tmp_path):
    from wsi_pipeline.sources.protocol import require_mpp
    from wsi_pipeline.sources.registry import open_source
    from wsi_pipeline.sources.synthetic import write_pyramidal_tiff

    (tmp_path / "slides").mkdir()
    slide = tmp_path / "slides" / "TCGA-01.tiff"
    write_pyramidal_tiff(slide, np.full((512, 512, 3), 220, np.uint8), 0.5, 2)
    write_clam_file(tmp_path / "TCGA-01.h5")
    (result,) = import_h5(tmp_path / "TCGA-01.h5", tmp_path / "store", encoder_id="e", slides_dir=tmp_path / "slides")
    with open_source("wsi", slide) as source:  # what a pipeline run names the entry (engine.tasks.open_slide)
        expected = slide_entry(source.uid, require_mpp(source))
    assert result.slide == expected and result.slide_from == f"slide file {slide}"
    assert FeatureStore(tmp_path / "store").attrs(result.tiling_key)["slide_path"] == str(slide)
    write_clam_file(tmp_path / "TCGA-99.h5")
    with pytest.raises(WSIPipelineError, match=r"expected one slide file named TCGA-99\.\*"):
        import_h5(tmp_path / "TCGA-99.h5", tmp_path / "store", encoder_id="e", slides_dir=tmp_path / "slides")


def test_unreadable_and_malformed_files_are_named(tmp_path):
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(WSIPipelineError, match="cannot read this HDF5 file") as error:
        import_h5(tmp_path / "notes.h5", tmp_path / "store", encoder_id="e")
    assert str(tmp_path / "notes.h5") in str(error.value)
    with h5py.File(tmp_path / "no-coords.h5", "w") as h5:
        h5.create_dataset("features", data=np.ones((3, 4)))
    with pytest.raises(WSIPipelineError, match="no 'coords' dataset in this file"):
        import_h5(tmp_path / "no-coords.h5", tmp_path / "store", encoder_id="e")
    with h5py.File(tmp_path / "mismatch.h5", "w") as h5:
        h5.create_dataset("features", data=np.ones((3, 4)))
        h5.create_dataset("coords", data=np.ones((4, 2)))
    with pytest.raises(WSIPipelineError, match=r"'features' is \(3, 4\) and 'coords' is \(4, 2\)"):
        import_h5(tmp_path / "mismatch.h5", tmp_path / "store", encoder_id="e")
    with pytest.raises(WSIPipelineError, match="no .h5 file"):
        (tmp_path / "empty").mkdir()
        import_h5(tmp_path / "empty", tmp_path / "store", encoder_id="e")


def test_an_exported_file_changed_afterwards_is_refused(tmp_path):
    build_store(tmp_path / "store", slides=("s1",))
    (path,) = export_h5(tmp_path / "store", tmp_path / "h5")
    with h5py.File(path, "a") as h5:
        h5["features"][0, 0] += 1
    with pytest.raises(WSIPipelineError, match="do not match the features_sha256 recorded"):
        import_h5(path, tmp_path / "fresh")
