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


@pytest.mark.slow
def test_a_run_on_a_file_url_store_equals_a_run_on_a_local_path(cohort, tmp_path):
    results = {}
    for name, store in (("path", str(tmp_path / "a" / "store")), ("url", f"file://{tmp_path / 'b' / 'store'}")):
        (tmp_path / name).mkdir()
        # Tile and extract only: the whole run on a URL store is the memory:// test's.
        result = run_pipeline(load_run_config(manifest(tmp_path / name, cohort, store)), stages=("tile", "extract"),
                              console=Console(file=StringIO(), width=200))
        assert result.exit_code == EXIT_OK, [f.reason for f in result.record.failures]
        results[name] = features_of(FeatureStore(store))
    assert results["path"].keys() == results["url"].keys() and len(results["url"]) == 10
    for uid, features in results["path"].items():
        np.testing.assert_array_equal(features, results["url"][uid])


@pytest.mark.slow
def test_a_run_on_a_memory_store_in_process(cohort, tmp_path):
    """memory:// lives in one process: the stages run on an in-process cluster."""
    config = load_run_config(manifest(tmp_path, cohort, "memory://e2e-run-store"))
    record = RunRecord(config=config.resolved(), seed=config.seed)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        run_stages(config, ("tile", "extract", "train", "score"), client, Console(file=StringIO(), width=200), record)
    assert not record.failures, [f.reason for f in record.failures]
    assert len(features_of(FeatureStore("memory://e2e-run-store"))) == 10
    assert (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / "predictions.csv").is_file()
