"""``wsi-pipeline store ls | verify | export-h5 | import-h5``: what a user sees and the exit statuses."""

from __future__ import annotations

import json
import uuid

import h5py
import numpy as np
import pytest
import zarr

from wsi_pipeline.cli.main import main
from wsi_pipeline.store import FeatureStore, features_key, tiling_key
from wsi_pipeline.store import feature_store as feature_store_module

TILING = "0.5um_256px_abc123"
ENCODER = "demo-0123456789ab"
ROWS, DIM = 300, 16


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(feature_store_module, "FEATURE_ROWS_PER_CHUNK", 100)


def build_store(root, slides=("s1", "s2", "s3")):
    store = FeatureStore(root)
    rng = np.random.default_rng(2)
    for slide in slides:
        entry = f"{slide}uid_0.25um"
        with store.claim(tiling_key(TILING, entry)):  # leaves <store>/.locks behind, as runs do
            store.write_tiling(
                TILING, entry, np.column_stack([np.arange(ROWS) * 256, np.zeros(ROWS)]), {"tissue_fraction": rng.random(ROWS)},
                {"slide_id": slide, "tile_px": 256, "tile_size_level0": 512.0, "read_level": 0, "slide_mpp": 0.25,
                 "target_mpp": 0.5, "effective_mpp": 0.5},
            )
        writer = store.begin_features(ENCODER, TILING, entry, ROWS, DIM, {"encoder": "demo", "slide_id": slide})
        writer.write(rng.normal(size=(ROWS, DIM)))
        writer.complete()
    return store


def feature_chunk(root, slide="s2", chunk=1):
    return root / "features" / ENCODER / TILING / f"{slide}uid_0.25um" / "features" / "c" / str(chunk) / "0"


def test_ls_prints_a_table_and_json(tmp_path, capsys):
    build_store(tmp_path / "store")
    assert main(["store", "ls", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "6 entries, 6 complete" in out and "s2uid_0.25um" in out and ".locks" not in out
    assert main(["store", "ls", str(tmp_path / "store"), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 6 and {e["kind"] for e in entries} == {"tiling", "features"}
    features = [e for e in entries if e["kind"] == "features"]
    assert {(e["encoder_id"], e["tiling_id"], e["rows"], e["dim"], e["complete"]) for e in features} == {(ENCODER, TILING, ROWS, DIM, True)}
    assert sorted(e["slide_id"] for e in features) == ["s1", "s2", "s3"] and features[0]["attrs"]["encoder"] == "demo"


def test_ls_reads_a_memory_store(capsys):
    root = f"memory://cli-{uuid.uuid4().hex}"
    build_store(root, slides=("m1",))
    assert main(["store", "ls", root, "--json"]) == 0
    assert [e["key"] for e in json.loads(capsys.readouterr().out)] == [
        tiling_key(TILING, "m1uid_0.25um"), features_key(ENCODER, TILING, "m1uid_0.25um")]


def test_verify_exits_0_on_a_clean_store(tmp_path, capsys):
    build_store(tmp_path / "store")
    assert main(["store", "verify", str(tmp_path / "store")]) == 0
    assert "6 ok, 0 bad, 0 incomplete" in capsys.readouterr().out


def test_verify_exits_1_naming_the_entry_that_lost_a_chunk(tmp_path, capsys):
    build_store(tmp_path / "store")
    feature_chunk(tmp_path / "store").unlink()
    assert main(["store", "verify", str(tmp_path / "store")]) == 1
    out = capsys.readouterr().out
    assert f"BAD {features_key(ENCODER, TILING, 's2uid_0.25um')}" in out and "c/1/0" in out
    assert "s1uid" not in out and "5 ok, 1 bad" in out


def test_verify_repair_marks_the_bad_entry_for_the_next_run_to_rebuild(tmp_path, capsys):
    store = build_store(tmp_path / "store")
    feature_chunk(tmp_path / "store").unlink()
    key = features_key(ENCODER, TILING, "s2uid_0.25um")
    assert main(["store", "verify", str(tmp_path / "store"), "--repair"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {key}" in out and "-> marked incomplete: the next run rebuilds it" in out and "--repair" not in out
    assert not store.is_complete(key)
    assert store.attrs(key)["invalidated"]["reason"].startswith("store verify: array 'features' lacks 1 of")
    assert main(["store", "ls", str(tmp_path / "store")]) == 0
    listing = capsys.readouterr().out
    assert listing.count("no (invalidated)") == 1 and "6 entries, 5 complete" in listing
    # Now a clean store with one entry to rebuild; a writer claims it and the store is whole again.
    assert main(["store", "verify", str(tmp_path / "store"), "--json", "--repair"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["incomplete"] == 1 and report["repaired"] == {}
    (entry,) = [e for e in report["entries"] if e["status"] == "incomplete"]
    assert entry["key"] == key and entry["notes"][1].startswith("invalidated: store verify: array 'features' lacks")
    with store.claim(key) as must_write:
        assert must_write
        writer = store.begin_features(ENCODER, TILING, "s2uid_0.25um", ROWS, DIM, {"encoder": "demo"})
        writer.write(np.zeros((ROWS, DIM)))
        writer.complete()
    assert main(["store", "verify", str(tmp_path / "store")]) == 0
    assert "6 ok, 0 bad, 0 incomplete" in capsys.readouterr().out


def test_verify_without_repair_says_how_to_repair(tmp_path, capsys):
    build_store(tmp_path / "store")
    feature_chunk(tmp_path / "store").unlink()
    assert main(["store", "verify", str(tmp_path / "store")]) == 1
    assert "run again with --repair" in capsys.readouterr().out
    assert FeatureStore(tmp_path / "store").is_complete(features_key(ENCODER, TILING, "s2uid_0.25um"))  # nothing changed


def test_verify_exits_1_on_a_truncated_chunk(tmp_path, capsys):
    build_store(tmp_path / "store")
    chunk = feature_chunk(tmp_path / "store", slide="s3", chunk=0)
    chunk.write_bytes(chunk.read_bytes()[:-30])
    assert main(["store", "verify", str(tmp_path / "store"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["clean"] is False
    bad = [e for e in report["entries"] if e["status"] == "bad"]
    assert [e["key"] for e in bad] == [features_key(ENCODER, TILING, "s3uid_0.25um")]
    assert "cannot be decoded" in bad[0]["reasons"][0]


def test_verify_exits_1_on_an_array_resized_shorter(tmp_path, capsys):
    build_store(tmp_path / "store")
    zarr.open_group(str(tmp_path / "store"), mode="a")[tiling_key(TILING, "s1uid_0.25um")]["coords"].resize((200, 2))
    assert main(["store", "verify", str(tmp_path / "store")]) == 1
    out = capsys.readouterr().out
    assert f"BAD {tiling_key(TILING, 's1uid_0.25um')}" in out and "has shape (200, 2) where its attrs give (300, 2)" in out


def test_verify_reports_an_incomplete_entry_but_exits_0(tmp_path, capsys):
    store = build_store(tmp_path / "store", slides=("s1",))
    writer = store.begin_features("other-enc", TILING, "s1uid_0.25um", ROWS, DIM, {})
    writer.write(np.ones((120, DIM)))
    assert main(["store", "verify", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "incomplete (ignored by readers" in out and features_key("other-enc", TILING, "s1uid_0.25um") in out
    assert "2 ok, 0 bad, 1 incomplete" in out


def test_export_then_import_into_a_fresh_store(tmp_path, capsys):
    source = build_store(tmp_path / "store")
    assert main(["store", "export-h5", str(tmp_path / "store"), "--output", str(tmp_path / "h5")]) == 0
    assert sorted(p.name for p in (tmp_path / "h5").iterdir()) == ["s1.h5", "s2.h5", "s3.h5"]
    assert main(["store", "import-h5", str(tmp_path / "h5"), "--store", str(tmp_path / "fresh")]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 file(s) written" in out and "slide entry from provenance" in out
    fresh = FeatureStore(tmp_path / "fresh")
    for slide in ("s1uid_0.25um", "s2uid_0.25um", "s3uid_0.25um"):
        assert fresh.read_features(ENCODER, TILING, slide).features.tobytes() == source.read_features(ENCODER, TILING, slide).features.tobytes()
        np.testing.assert_array_equal(fresh.read_tiling(TILING, slide).coords, source.read_tiling(TILING, slide).coords)
    assert main(["store", "ls", str(tmp_path / "fresh"), "--json"]) == 0
    fresh_keys = [e["key"] for e in json.loads(capsys.readouterr().out)]
    assert main(["store", "ls", str(tmp_path / "store"), "--json"]) == 0
    assert fresh_keys == [e["key"] for e in json.loads(capsys.readouterr().out)]
    assert main(["store", "verify", str(tmp_path / "fresh")]) == 0


def test_import_over_a_tiling_with_other_coordinates_names_the_features_it_invalidates(tmp_path, capsys):
    (tmp_path / "clam").mkdir()
    path = tmp_path / "clam" / "slide-A.h5"

    def write(offset: int) -> None:
        with h5py.File(path, "w") as h5:
            h5.create_dataset("features", data=np.random.default_rng(offset).normal(size=(20, 8)).astype(np.float32))
            coords = h5.create_dataset("coords", data=np.arange(40).reshape(20, 2) * 256 + offset)
            coords.attrs.update({"patch_size": 256, "patch_level": 0, "downsample": [1.0, 1.0]})

    store = str(tmp_path / "store")
    write(0)
    for encoder in ("uni-ext", "conch-ext"):  # one tiling entry, two encoders' features on it
        assert main(["store", "import-h5", str(tmp_path / "clam"), "--store", store, "--encoder-id", encoder]) == 0
    capsys.readouterr()
    write(128)  # the same slide tiled elsewhere
    assert main(["store", "import-h5", str(tmp_path / "clam"), "--store", store, "--encoder-id", "uni-ext", "--overwrite"]) == 0
    out = capsys.readouterr().out
    tiling = _only_tiling(tmp_path / "store")
    assert f"overwritten: {path}" in out
    assert f"invalidated features/conch-ext/{tiling}/slide-A: computed on the tiles this import replaced" in out
    assert not FeatureStore(store).is_complete(f"features/conch-ext/{tiling}/slide-A")
    assert main(["store", "verify", store]) == 0


def test_import_of_a_foreign_file_needs_encoder_id(tmp_path, capsys):
    (tmp_path / "clam").mkdir()
    with h5py.File(tmp_path / "clam" / "slide-A.h5", "w") as h5:
        h5.create_dataset("features", data=np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
        coords = h5.create_dataset("coords", data=np.arange(40).reshape(20, 2))
        coords.attrs.update({"patch_size": 256, "patch_level": 0, "downsample": [1.0, 1.0], "name": "slide-A"})
    assert main(["store", "import-h5", str(tmp_path / "clam"), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "--encoder-id" in err and "slide-A.h5" in err and "Traceback" not in err
    assert main(["store", "import-h5", str(tmp_path / "clam"), "--store", str(tmp_path / "store"), "--encoder-id", "uni-ext"]) == 0
    assert "imported:" in capsys.readouterr().out
    assert FeatureStore(tmp_path / "store").list_slides(f"features/uni-ext/{_only_tiling(tmp_path / 'store')}") == ["slide-A"]


def _only_tiling(root):
    (tiling_id,) = [p.name for p in (root / "tiling").iterdir() if p.is_dir()]
    return tiling_id


def test_bad_input_exits_2_naming_the_file(tmp_path, capsys):
    assert main(["store", "ls", str(tmp_path / "absent")]) == 2
    assert "absent: no feature store here" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["store", "verify", str(tmp_path / "plain")]) == 2
    assert "not a feature store" in capsys.readouterr().err
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    assert main(["store", "import-h5", str(tmp_path / "broken.h5"), "--store", str(tmp_path / "s"), "--encoder-id", "e"]) == 2
    err = capsys.readouterr().err
    assert "broken.h5: cannot read this HDF5 file" in err and "fix:" in err
    with h5py.File(tmp_path / "only-features.h5", "w") as h5:
        h5.create_dataset("features", data=np.ones((2, 2)))
    assert main(["store", "import-h5", str(tmp_path / "only-features.h5"), "--store", str(tmp_path / "s"), "--encoder-id", "e"]) == 2
    assert "no 'coords' dataset" in capsys.readouterr().err
    build_store(tmp_path / "store", slides=("s1",))
    assert main(["store", "export-h5", str(tmp_path / "store"), "--output", str(tmp_path / "o"), "--encoder", "nope"]) == 2
    assert f"--encoder {ENCODER} --tiling {TILING}" in capsys.readouterr().err
