"""A cohort's bags in the store: who has one, why the others do not, and loading only a fold's patients."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.cohort.table import Cohort, load_cohort
from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil.bag_cache import bag_data_key
from wsi_pipeline.mil.cohort_bags import (
    StoreBagSource,
    available_bags,
    entry_slide_ids,
    load_bags,
    slide_entries,
)
from wsi_pipeline.mil.cv import train_fold
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.mil.tasks import BinaryTask
from wsi_pipeline.mil.train import TrainConfig
from wsi_pipeline.store import features_key
from wsi_pipeline.store.feature_store import FeatureStore

ENCODER, TILING = "enc-1", "til-1"


def write_cohort(folder: Path, rows: list[tuple[str, str, int]]) -> Cohort:
    """A cohort table of (patient, slide, label) rows; the slide files need not exist to load it."""
    frame = pd.DataFrame(rows, columns=["patient_id", "slide_id", "label"])
    frame["slide_path"] = frame["slide_id"] + ".tiff"
    frame.to_csv(folder / "cohort.csv", index=False)
    return load_cohort(folder / "cohort.csv")


def put_features(store: FeatureStore, uid: str, features: np.ndarray, complete: bool = True) -> None:
    writer = store.begin_features(ENCODER, TILING, uid, n_rows=len(features), dim=features.shape[1], attrs={})
    writer.write(features)
    if complete:
        writer.complete()


def test_store_entries_map_back_to_the_cohorts_slide_ids(tmp_path):
    # P1's slide b failed (no entry) and c's features are incomplete: P1's entries are a's and e's.
    cohort = write_cohort(tmp_path, [("P1", "a", 1), ("P1", "b", 1), ("P1", "c", 1), ("P1", "e", 1), ("P2", "d", 0)])
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for uid in ("ua", "ue", "ud"):
        put_features(store, uid, rng.normal(size=(2, 3)))
    put_features(store, "uc", rng.normal(size=(2, 3)), complete=False)
    uids = {"a": "ua", "c": "uc", "e": "ue", "d": "ud"}
    found = available_bags(store, cohort, uids, ENCODER, TILING)
    assert found.patient_slides == (("P1", ("ua", "ue")), ("P2", ("ud",)))

    names = entry_slide_ids(cohort, uids, found.patient_slides)

    assert names == (("P1", ("a", "e")), ("P2", ("d",)))
    named = StoreBagSource(found.patient_slides, str(tmp_path / "store"), ENCODER, TILING, slide_ids=names)
    assert named.slide_names() == names
    assert pickle.loads(pickle.dumps(named)) == named  # travels to training tasks as it is
    # Without slide ids a slide is named by its store entry.
    assert StoreBagSource(found.patient_slides, str(tmp_path / "store"), ENCODER, TILING).slide_names() == found.patient_slides
    with pytest.raises(ValueError, match="2 store entries but 1 matching slides"):
        entry_slide_ids(cohort, {"a": "ua"}, found.patient_slides)


def test_available_bags_excludes_patients_without_features_and_notes_missing_slides(tmp_path):
    cohort = write_cohort(
        tmp_path,
        [("P1", "a", 1), ("P1", "b", 1), ("P2", "c", 0), ("P2", "d", 0), ("P3", "e", 1), ("P4", "f", 0)],
    )
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for uid in ("ua", "ub", "uc"):
        put_features(store, uid, rng.normal(size=(3, 4)))
    put_features(store, "ud", rng.normal(size=(3, 4)), complete=False)  # a killed extraction
    # Slide e failed this run (no uid); f has a uid but was never extracted.
    uids = {"a": "ua", "b": "ub", "c": "uc", "d": "ud", "f": "uf"}

    patient_slides, excluded, notes, warnings, checksums = available_bags(store, cohort, uids, ENCODER, TILING)

    assert patient_slides == (("P1", ("ua", "ub")), ("P2", ("uc",)))
    assert excluded == {
        "P3": "no slide with features (failed or missing: e)",
        "P4": "no slide with features (failed or missing: f)",
    }
    assert notes == ["patient P2: trained without slide(s) d (failed)"]
    assert warnings == []
    recorded = {uid: store.attrs(features_key(ENCODER, TILING, uid))["features_sha256"] for uid in ("ua", "ub", "uc")}
    assert checksums == recorded and all(recorded.values())


def test_one_image_listed_twice_enters_a_bag_once_and_across_patients_is_a_warning(tmp_path):
    # P1 lists one image as a and a2 (same content: one store entry); P2's c is P3's d.
    cohort = write_cohort(tmp_path, [("P1", "a", 1), ("P1", "a2", 1), ("P1", "b", 1), ("P2", "c", 0), ("P3", "d", 1)])
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for uid in ("ua", "ub", "uc"):
        put_features(store, uid, rng.normal(size=(3, 4)))
    uids = {"a": "ua", "a2": "ua", "b": "ub", "c": "uc", "d": "uc"}
    found = available_bags(store, cohort, uids, ENCODER, TILING)
    assert found.patient_slides == (("P1", ("ua", "ub")), ("P2", ("uc",)), ("P3", ("uc",)))
    assert found.notes == ["patient P1: slides a, a2 are one image (store entry ua); its features enter the bag once"]
    (warning,) = found.warnings
    assert warning.startswith("one slide image is listed for 2 patients: P2 (c); P3 (d) (store entry uc)")
    assert "training and a test fold" in warning and "one patient_id" in warning
    # The entry is named after the first slide that lists it; the source's bag holds it once.
    names = entry_slide_ids(cohort, uids, found.patient_slides)
    assert names == (("P1", ("a", "b")), ("P2", ("c",)), ("P3", ("d",)))
    source = StoreBagSource(found.patient_slides, str(tmp_path / "store"), ENCODER, TILING, slide_ids=names)
    assert source.load(["P1"])["P1"].shape == (6, 4)


def test_features_written_again_with_other_values_change_the_fingerprint(tmp_path):
    cohort = write_cohort(tmp_path, [("P1", "a", 1), ("P2", "b", 0)])
    store = FeatureStore(tmp_path / "store")
    put_features(store, "ua", np.ones((3, 4)))
    put_features(store, "ub", np.zeros((3, 4)))
    uids = {"a": "ua", "b": "ub"}

    def source() -> StoreBagSource:
        found = available_bags(store, cohort, uids, ENCODER, TILING)
        return StoreBagSource(found.patient_slides, str(tmp_path / "store"), ENCODER, TILING,
                              features_digest=found.features_digest)

    before = source().fingerprint()
    assert source().fingerprint() == before  # same entries, same values
    put_features(store, "ua", np.ones((3, 4)) * 2)  # same entry, other values
    after = source().fingerprint()
    assert after["bags"] == before["bags"] and after != before
    # The bag cache keys on the fingerprint too: a worker holding the old values reads again.
    assert bag_data_key(source(), False) != bag_data_key(dataclasses.replace(source(), features_digest=before["features_digest"]), False)


def test_another_encoder_has_no_bags_in_this_store(tmp_path):
    cohort = write_cohort(tmp_path, [("P1", "a", 1)])
    store = FeatureStore(tmp_path / "store")
    put_features(store, "ua", np.ones((2, 4)))
    found = available_bags(store, cohort, {"a": "ua"}, "other-encoder", TILING)
    assert found.patient_slides == () and list(found.excluded) == ["P1"]


def test_slide_entries_reuse_known_names_skip_failed_slides_and_fingerprint_the_rest(tmp_path):
    from wsi_pipeline.sources.protocol import require_mpp
    from wsi_pipeline.sources.registry import open_source
    from wsi_pipeline.sources.synthetic import generate_cohort
    from wsi_pipeline.store.feature_store import slide_entry

    table = generate_cohort(tmp_path, n_patients=1, seed=0, positive_fraction=0.0, two_slide_fraction=0.0,
                            width=1024, height=1024, n_levels=3)
    real = pd.read_csv(table, dtype=str).iloc[0]
    extra = pd.DataFrame(
        [
            {"patient_id": "P9", "slide_id": "known", "slide_path": "known.tiff", "label": 1},
            {"patient_id": "P9", "slide_id": "failed", "slide_path": "failed.tiff", "label": 1},
            {"patient_id": "P8", "slide_id": "absent", "slide_path": "absent.tiff", "label": 0},
        ]
    )
    pd.concat([pd.read_csv(table, dtype=str), extra]).to_csv(tmp_path / "all.csv", index=False)
    cohort = load_cohort(tmp_path / "all.csv")

    entries = slide_entries(cohort, "wsi", known={"known": "uid-from-a-worker"}, skip={"failed"})

    with open_source("wsi", tmp_path / real["slide_path"]) as source:
        expected = slide_entry(source.uid, require_mpp(source))
    # The absent file cannot be opened: left out, so it counts as a slide without features.
    assert entries == {real["slide_id"]: expected, "known": "uid-from-a-worker"}


def test_load_bags_reads_only_the_patients_asked_for(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "store")
    parts = {uid: np.full((n, 3), value, dtype=np.float32) for uid, n, value in (("u1", 2, 1.0), ("u2", 3, 2.0), ("u3", 4, 3.0))}
    for uid, features in parts.items():
        put_features(store, uid, features)
    source = StoreBagSource((("A", ("u1", "u2")), ("B", ("u3",))), str(tmp_path / "store"), ENCODER, TILING)
    read = []
    original = FeatureStore.read_features

    def recording(self, encoder_id, tiling_id, slide_uid):
        read.append(slide_uid)
        return original(self, encoder_id, tiling_id, slide_uid)

    monkeypatch.setattr(FeatureStore, "read_features", recording)

    bags = load_bags(source, ["A", "not-in-source"])

    assert read == ["u1", "u2"]
    assert list(bags) == ["A"]  # an unknown patient is absent; training names it in its error
    assert bags["A"].dtype == np.float16 and bags["A"].shape == (5, 3)
    np.testing.assert_array_equal(bags["A"][:, 0], [1, 1, 2, 2, 2])
    assert source.patients == ("A", "B")


@pytest.fixture
def fold_store(tmp_path):
    """Twelve patients with one or two slides each; the fold below uses eight of them."""
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(1)
    patient_slides, labels = [], {}
    for i in range(12):
        pid, label = f"P{i:02d}", i % 2
        uids = tuple(f"{pid}-s{j}" for j in range(1 + i % 3 // 2))
        for uid in uids:
            features = rng.normal(size=(int(rng.integers(5, 12)), 8)) + label
            put_features(store, uid, features)
        patient_slides.append((pid, uids))
        labels[pid] = label
    source = StoreBagSource(tuple(patient_slides), str(tmp_path / "store"), ENCODER, TILING)
    plan = FoldPlan(fold=1, fit_ids=("P00", "P01", "P02", "P03"), val_ids=("P04", "P05"), test_ids=("P06", "P07"))
    return source, plan, labels


def test_a_train_task_reads_only_its_folds_patients_and_predicts_as_with_every_bag(fold_store, monkeypatch):
    from wsi_pipeline.engine.tasks import train_task

    source, plan, labels = fold_store
    model = ModelConfig(aggregators=["meanpool"], max_epochs=3, patience=2, hidden_dim=8, max_instances=None, device="cpu")
    # The old way, for comparison: every patient's bag in memory.
    every_bag = load_bags(source, source.patients)
    config = TrainConfig.from_model(model)
    expected = train_fold(plan, "meanpool", every_bag, labels, config, seed=5)

    read = []
    original = FeatureStore.read_features

    def recording(self, encoder_id, tiling_id, slide_uid):
        read.append(slide_uid)
        return original(self, encoder_id, tiling_id, slide_uid)

    monkeypatch.setattr(FeatureStore, "read_features", recording)
    fold_targets = {p: labels[p] for p in plan.patients}  # a train task carries its fold's targets only
    outcome = train_task(plan, "meanpool", source, fold_targets, BinaryTask(), model, seed=5, threads=1)

    assert outcome.status == "done", outcome.reason
    fold_uids = [uid for pid, uids in source.patient_slides if pid in plan.patients for uid in uids]
    assert sorted(read) == sorted(fold_uids)
    assert not any(uid.startswith(("P08", "P09", "P10", "P11")) for uid in read)
    rows = pd.DataFrame(outcome.info["predictions"])
    assert list(rows["patient_id"]) == ["P06", "P07"]
    np.testing.assert_array_equal(rows["score"].to_numpy(), expected["score"].to_numpy())


def test_tile_qc_filters_keep_only_passing_tiles(tmp_path):
    store = FeatureStore(tmp_path / "store")
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    put_features(store, "u1", features)
    columns = {"tissue_fraction": np.array([0.9, 0.3, 0.8, 0.7]), "pen_fraction": np.array([0.0, 0.0, 0.5, 0.05])}
    store.write_tiling(TILING, "u1", np.zeros((4, 2), dtype=np.int64), columns, attrs={})
    model = ModelConfig(min_tissue=0.5, max_pen=0.1, min_blur=10.0)  # the entry has no blur column: not filtered by it
    assert model.tile_filters() == (("tissue_fraction", ">=", 0.5), ("pen_fraction", "<=", 0.1), ("blur", ">=", 10.0))
    filtered = StoreBagSource((("A", ("u1",)),), str(tmp_path / "store"), ENCODER, TILING, model.tile_filters())
    np.testing.assert_array_equal(load_bags(filtered, ["A"])["A"], features[[0, 3]])
    unfiltered = StoreBagSource((("A", ("u1",)),), str(tmp_path / "store"), ENCODER, TILING)
    np.testing.assert_array_equal(load_bags(unfiltered, ["A"])["A"], features)
    # The train stage's freshness key is the one it had before filters existed, unless filters are set.
    assert set(unfiltered.fingerprint()) == {"bags", "encoder_id", "tiling_id"}
    assert filtered.fingerprint()["tile_filters"] == model.tile_filters()
    assert ModelConfig().tile_filters() == ()


def test_a_slide_level_train_task_names_its_rows_by_the_sources_slide_names(fold_store):
    from wsi_pipeline.engine.tasks import train_task

    source, _, labels = fold_store
    names = tuple((pid, tuple(f"slide-{uid}" for uid in uids)) for pid, uids in source.patient_slides)
    named = dataclasses.replace(source, slide_ids=names)  # what gather_bags builds from the cohort
    plan = FoldPlan(fold=0, fit_ids=("P00", "P01", "P03", "P04"), val_ids=("P06", "P07"), test_ids=("P02", "P05"))
    model = ModelConfig(aggregators=["meanpool"], max_epochs=2, patience=1, hidden_dim=8, device="cpu", bags="slide")

    outcome = train_task(plan, "meanpool", named, {p: labels[p] for p in plan.patients}, BinaryTask(), model, seed=5, threads=1)

    assert outcome.status == "done", outcome.reason
    rows = pd.DataFrame(outcome.info["predictions"])
    assert rows[["patient_id", "slide_id", "label"]].values.tolist() == [
        ["P02", "slide-P02-s0", 0], ["P02", "slide-P02-s1", 0], ["P05", "slide-P05-s0", 1], ["P05", "slide-P05-s1", 1],
    ]
