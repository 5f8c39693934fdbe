"""Bags held once per worker when they fit the budget, streamed (and prefetched) when not."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil import bag_cache
from wsi_pipeline.mil.bag_cache import StreamedBags, plan_bags, prefetched, run_bags
from wsi_pipeline.mil.cohort_bags import StoreBagSource
from wsi_pipeline.mil.cv import train_fold
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.mil.standardise import clear_stats_memo
from wsi_pipeline.mil.train import TrainConfig
from wsi_pipeline.store.feature_store import FeatureStore

ENCODER, TILING = "enc-1", "til-1"


def store_source(tmp_path, n_patients: int = 12, slides: int = 1, rows: int = 40, dim: int = 8) -> tuple[StoreBagSource, dict]:
    """A real Zarr store with ``slides`` float16 feature entries per patient, and labels (half positive)."""
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    listing, labels = [], {}
    for p in range(n_patients):
        patient = f"P{p:02d}"
        labels[patient] = p % 2
        uids = []
        for s in range(slides):
            uid = f"u{p}-{s}"
            features = rng.normal(size=(rows + 3 * s, dim)) + labels[patient]
            writer = store.begin_features(ENCODER, TILING, uid, n_rows=len(features), dim=dim, attrs={})
            writer.write(features)
            writer.complete()
            uids.append(uid)
        listing.append((patient, tuple(uids)))
    source = StoreBagSource(tuple(listing), store_root=str(tmp_path / "store"), encoder_id=ENCODER, tiling_id=TILING)
    return source, labels


class CountingSource(StoreBagSource):
    """Counts the patients read and the threads that read them."""

    reads: list = []  # noqa: RUF012 (a shared tally, reset by each test)

    def load_parts(self, patients):
        wanted = list(patients)
        CountingSource.reads.append((tuple(wanted), threading.current_thread().name))
        return super().load_parts(wanted)


def counting(source: StoreBagSource) -> CountingSource:
    CountingSource.reads = []
    return CountingSource(source.patient_slides, store_root=source.store_root, encoder_id=ENCODER, tiling_id=TILING)


@pytest.fixture(autouse=True)
def empty_cache():
    bag_cache.clear_cache()
    yield
    bag_cache.clear_cache()


def test_nbytes_is_known_from_the_entries_without_reading_them(tmp_path):
    source, _ = store_source(tmp_path, n_patients=3, slides=2, rows=10, dim=8)
    # float16: (10 + 13) rows per patient, 8 features, 2 bytes
    assert source.nbytes() == 3 * (10 + 13) * 8 * 2
    assert plan_bags(source, budget=3 * 23 * 16).mode == "memory"
    assert plan_bags(source, budget=3 * 23 * 16 - 1).mode == "streamed"


def test_bags_that_fit_are_read_once_per_process_and_shared_between_tasks(tmp_path):
    plain, _ = store_source(tmp_path)
    source = counting(plain)
    fold_a = [p for p in source.patients][:8]
    fold_b = [p for p in source.patients][4:]
    first, plan = run_bags(source, fold_a, budget=10**9)
    second, _ = run_bags(source, fold_b, budget=10**9)
    assert plan.mode == "memory" and "held in memory" in plan.describe()
    read = [p for patients, _ in CountingSource.reads for p in patients]
    assert sorted(read) == sorted(source.patients)  # each patient read exactly once over both tasks
    assert second[fold_a[5]] is first[fold_a[5]]  # the same array, not a copy per task
    np.testing.assert_array_equal(first[fold_a[0]], plain.load([fold_a[0]])[fold_a[0]])
    assert bag_cache.cached_patients() == len(source.patients)

    # Another source (the next run on a long-lived worker) replaces the cached bags.
    other, _ = store_source(tmp_path / "other", n_patients=2)
    run_bags(other, other.patients, budget=10**9)
    assert bag_cache.cached_patients() == 2


def test_bags_over_budget_are_streamed_and_prefetched_on_reader_threads(tmp_path):
    plain, _ = store_source(tmp_path)
    source = counting(plain)
    bags, plan = run_bags(source, source.patients, budget=100)
    assert isinstance(bags, StreamedBags) and plan.mode == "streamed" and "streamed" in plan.describe()
    assert bag_cache.cached_patients() == 0 and CountingSource.reads == []  # nothing read up front
    order = list(source.patients)[:5]
    got = list(prefetched(bags, [[p] for p in order]))
    expected = plain.load(order)
    for (bag,), p in zip(got, order, strict=True):
        np.testing.assert_array_equal(bag, expected[p])
    threads = {thread for _, thread in CountingSource.reads}
    assert all(t.startswith("bag-prefetch") for t in threads)
    assert len(CountingSource.reads) == 5 and bags._pending == {}  # handed-out bags are not kept
    with pytest.raises(KeyError):
        bags["nobody"]
    bags.close()


def test_a_slide_view_of_streamed_bags_reads_one_slide_at_a_time(tmp_path):
    source, _ = store_source(tmp_path, n_patients=3, slides=2)
    bags = StreamedBags(source, source.patients, by_slide=True)
    view = bags.slide_view()
    assert len(view) == 6
    key = list(view)[3]  # patient 1, slide 1
    np.testing.assert_array_equal(view[key], source.load_parts(["P01"])["P01"][1])
    bags.close()


@pytest.mark.parametrize("layout", ["patient-early", "patient-late"])
def test_training_on_streamed_bags_equals_training_on_bags_in_memory(tmp_path, layout):
    source, labels = store_source(tmp_path, n_patients=12, slides=2 if layout == "patient-late" else 1)
    ids = list(source.patients)
    plan = FoldPlan(fold=0, fit_ids=tuple(ids[:6]), val_ids=tuple(ids[6:9]), test_ids=tuple(ids[9:]))
    config = replace(
        TrainConfig.from_model(ModelConfig(max_epochs=3, patience=3, hidden_dim=8, max_instances=16)), bags=layout
    )
    by_slide = layout != "patient-early"
    in_memory, _ = run_bags(source, ids, by_slide=by_slide, budget=10**9)
    streamed, _ = run_bags(source, ids, by_slide=by_slide, budget=1)
    a = train_fold(plan, "abmil", in_memory, labels, config, seed=3)
    clear_stats_memo()  # the streamed run takes its own statistics, from bags read one by one
    b = train_fold(plan, "abmil", streamed, labels, config, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["history"]["val_loss"] == b.attrs["history"]["val_loss"]
    history = b.attrs["history"]
    assert len(history["data_seconds"]) == len(history["epoch_seconds"]) == history["epochs_run"]
    assert all(0 <= d <= e for d, e in zip(history["data_seconds"], history["epoch_seconds"], strict=True))
    streamed.close()


def test_cached_bags_are_checked_once_when_read_and_a_bad_one_is_never_cached(tmp_path, monkeypatch):
    source, _ = store_source(tmp_path, n_patients=4)
    bags, _ = run_bags(source, source.patients, budget=10**9)
    scans = []
    monkeypatch.setattr(np, "isfinite", lambda *a, **k: scans.append(1) or np.ones((), bool))
    assert bags.check_ids(list(source.patients)) == 8 and scans == []  # shapes only, no value scanned again
    monkeypatch.undo()
    with pytest.raises(Exception, match="no feature bag"):
        bags.check_ids(["nobody"])

    store = FeatureStore(tmp_path / "store")
    writer = store.begin_features(ENCODER, TILING, "bad", n_rows=3, dim=8, attrs={})
    writer.write(np.full((3, 8), np.inf))
    writer.complete()
    broken = StoreBagSource((("PX", ("bad",)),), store_root=source.store_root, encoder_id=ENCODER, tiling_id=TILING)
    with pytest.raises(Exception, match="NaN or infinite"):
        run_bags(broken, ["PX"], budget=10**9)
    assert bag_cache.cached_patients() == 0


def test_loading_a_one_slide_patient_keeps_the_array_read_and_joins_several(tmp_path, monkeypatch):
    """No second copy of the cohort while bags are loaded: one slide is used as read."""
    one, _ = store_source(tmp_path / "one", n_patients=2, slides=1)
    read = {}
    original = StoreBagSource.load_parts

    def spy(self, patients):
        parts = original(self, patients)
        read.update({p: v[0] for p, v in parts.items()})
        return parts

    monkeypatch.setattr(StoreBagSource, "load_parts", spy)
    bags = one.load(one.patients)
    assert all(bags[p] is read[p] for p in one.patients)
    two, _ = store_source(tmp_path / "two", n_patients=2, slides=2, rows=5)
    joined = two.load(["P00"])["P00"]
    assert joined.shape == (5 + 8, 8)


def test_a_sources_size_is_asked_once_per_process(tmp_path, monkeypatch):
    """Every training task plans its bags; the source's entries are opened for that only once."""
    source, _ = store_source(tmp_path, n_patients=3)
    calls = []
    original = StoreBagSource.nbytes
    monkeypatch.setattr(StoreBagSource, "nbytes", lambda self: calls.append(1) or original(self))
    for _ in range(3):
        run_bags(source, source.patients, budget=10**9)
    assert len(calls) == 1 and plan_bags(source, 1).nbytes == original(source)


@pytest.mark.parametrize("budget", [10**9, 1], ids=["memory", "streamed"])
def test_every_aggregator_of_a_fold_shares_one_read_of_the_fit_bags_for_statistics(tmp_path, budget):
    plain, labels = store_source(tmp_path, n_patients=10)
    source = counting(plain)
    ids = list(source.patients)
    plan = FoldPlan(fold=0, fit_ids=tuple(ids[:6]), val_ids=tuple(ids[6:8]), test_ids=tuple(ids[8:]))
    config = TrainConfig.from_model(ModelConfig(max_epochs=1, patience=1, hidden_dim=8, max_instances=16))
    stats, reads = [], []
    for aggregator in ("meanpool", "abmil"):  # two training tasks of one fold on a worker
        CountingSource.reads = []
        bags, _ = run_bags(source, ids, budget=budget)
        rows = train_fold(plan, aggregator, bags, labels, config, seed=3)
        stats.append(rows.attrs["history"]["feature_stats"])
        reads.append([p for patients, _ in CountingSource.reads for p in patients])
        if budget == 1:
            bags.close()
    assert stats[1] is stats[0]
    if budget == 1:
        # Streamed: the first task reads each fit bag once more than the second (for the
        # statistics); validation and test bags are read as often by both.
        for pid in ids:
            assert reads[0].count(pid) == reads[1].count(pid) + (pid in plan.fit_ids) >= 1, (pid, reads)
    else:
        assert sorted(reads[0]) == sorted(ids) and reads[1] == []  # held: read once, by the first task
