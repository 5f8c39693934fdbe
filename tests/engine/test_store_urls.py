"""A whole run against a store given as an fsspec URL: file:// on worker processes, memory:// in-process."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import yaml
from distributed import Client, LocalCluster
from rich.console import Console

from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.record import RunRecord
from wsi_pipeline.engine.runner import EXIT_OK, run_pipeline, run_stages
from wsi_pipeline.sources.synthetic import generate_cohort
from wsi_pipeline.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]


def manifest(folder: Path, table: Path, store: str) -> Path:
    data = {
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": {"table": str(table)},
        "output": "out",
        "store": store,
        "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "seed": 3,
        "overrides": {"validation": {"n_folds": 2}, "model": {"max_epochs": 3, "aggregators": ["meanpool"]},
                      "scoring": {"bootstrap_resamples": 100}},
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    return generate_cohort(folder, n_patients=10, seed=9, positive_fraction=0.5, two_slide_fraction=0.0, width=768, height=768, n_levels=3)


def features_of(store: FeatureStore) -> dict[str, np.ndarray]:
    (encoder,) = store._open("r")["features"].group_keys()
    (tiling,) = store._open("r")[f"features/{encoder}"].group_keys()
    prefix = f"features/{encoder}/{tiling}"
    return {uid: store.read_features(encoder, tiling, uid).features for uid in store.list_slides(prefix)}


@pytest.fixture(scope="module")
def memory_run(cohort, tmp_path_factory):
    """A whole run in-process on a memory:// store (memory:// lives in one process): its record,
    output folder and features, the reference the file:// run must equal."""
    folder = tmp_path_factory.mktemp("memory")
    config = load_run_config(manifest(folder, cohort, "memory://e2e-run-store"))
    record = RunRecord(config=config.resolved(), seed=config.seed)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        run_stages(config, ("tile", "extract", "train", "score"), client, Console(file=StringIO(), width=200), record)
    return record, folder / "out", features_of(FeatureStore("memory://e2e-run-store"))


@pytest.mark.slow
def test_a_run_on_a_memory_store_in_process(memory_run):
    record, out, features = memory_run
    assert not record.failures, [f.reason for f in record.failures]
    assert len(features) == 10
    assert (out / "metrics.json").is_file() and (out / "predictions.csv").is_file()


@pytest.mark.slow
def test_a_run_on_a_file_url_store_on_worker_processes_equals_the_memory_run(cohort, memory_run, tmp_path):
    store = f"file://{tmp_path / 'store'}"
    # Tile and extract only, on the default local cluster of worker processes: the whole run on a
    # URL store is the memory:// one's.
    result = run_pipeline(load_run_config(manifest(tmp_path, cohort, store)), stages=("tile", "extract"),
                          console=Console(file=StringIO(), width=200))
    assert result.exit_code == EXIT_OK, [f.reason for f in result.record.failures]
    on_disk, in_memory = features_of(FeatureStore(store)), memory_run[2]
    assert on_disk.keys() == in_memory.keys() and len(on_disk) == 10
    for uid, features in in_memory.items():
        np.testing.assert_array_equal(on_disk[uid], features)
