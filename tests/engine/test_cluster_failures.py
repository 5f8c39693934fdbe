"""Runs on a real Dask scheduler with worker processes: a worker killed mid-run, two runs on one store.

The scheduler and workers are the ``dask scheduler`` and ``dask worker`` commands on loopback,
as on a cluster; the pipeline is the ``wsi-pipeline`` command line, as a user runs it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsi_pipeline.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).parent / "dask"
OVERRIDES = {"features": {"batch_size": 8}, "model": {"max_epochs": 3, "aggregators": ["meanpool"]},
             "validation": {"n_folds": 2}, "scoring": {"bootstrap_resamples": 100}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_manifest(folder: Path, table: Path, store: Path, output: str) -> Path:
    path = folder / f"{output}.yaml"
    path.write_text(yaml.safe_dump({
        "workflow": "demo", "cohort": {"table": str(table)}, "output": output, "store": str(store),
        "cluster": {"n_workers": 2, "threads_per_worker": 1}, "seed": 2, "overrides": OVERRIDES,
    }))
    return path


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wsi_pipeline.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def all_features(store_root: Path) -> dict[str, np.ndarray]:
    store = FeatureStore(store_root)
    out = {}
    for encoder in (p for p in (store_root / "features").iterdir() if p.is_dir()):
        for tiling in (p for p in encoder.iterdir() if p.is_dir()):
            prefix = f"features/{encoder.name}/{tiling.name}"
            for uid in store.list_slides(prefix):
                out[uid] = store.read_features(encoder.name, tiling.name, uid).features
    return out


def complete_count(store_root: Path) -> int:
    return len(all_features(store_root)) if (store_root / "features").is_dir() else 0


@pytest.fixture(scope="module")
def cohort(eight_patients):
    """The engine tests' eight-patient cohort (conftest)."""
    return eight_patients


@pytest.fixture(scope="module")
def clean_features(clean_run):
    """Features of the undisturbed run on that cohort (conftest): what every run here must equal.

    That run trains other aggregators with another seed; neither reaches the features, which
    depend on the slides, the tiling and the encoder only.
    """
    return all_features(Path(yaml.safe_load(clean_run.read_text())["output"]) / "store")


@pytest.mark.slow
def test_a_worker_killed_mid_extraction_changes_nothing(cohort, clean_features, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # No nanny: a killed worker stays dead, as when a node goes away.
    workers = [subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                 "--resources", "GPU=1", "--name", f"w{i}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(2)]
    store = tmp_path / "store"
    try:
        run = cli("run", str(write_manifest(tmp_path, cohort, store, "out")), "--scheduler", address)
        deadline = time.monotonic() + 300
        while complete_count(store) < 2:
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no slide was embedded in time"
            time.sleep(0.1)
        workers[0].send_signal(signal.SIGKILL)
        assert complete_count(store) < 8, "the worker must die mid-extraction"
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        assert workers[0].wait(timeout=10) == -signal.SIGKILL
    finally:
        for process in (*workers, scheduler):
            process.kill()
            process.wait()
    features = all_features(store)
    assert features.keys() == clean_features.keys() and len(features) == 8
    for uid, values in clean_features.items():
        np.testing.assert_array_equal(features[uid], values)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"] == "ok" and record["counts"]["extract"]["done"] == 8
    # The task the dead worker was running was started again elsewhere, and the record says so.
    assert sum(record["retries"].values()) >= 1, record["retries"]
    assert any(item["attempts"] >= 2 for item in record["items"])


@pytest.mark.slow
def test_two_runs_on_one_store_at_once_compute_each_entry_once(cohort, clean_features, tmp_path):
    store = tmp_path / "shared-store"
    runs = [cli("run", str(write_manifest(tmp_path, cohort, store, f"out{i}")))
            for i in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-3000:]
    records = [json.loads((tmp_path / f"out{i}" / "run.json").read_text()) for i in range(2)]
    for stage in ("tile", "extract"):
        counts = [r["counts"][stage] for r in records]
        assert sum(c["failed"] for c in counts) == 0
        # Each of the 8 entries was computed by exactly one of the runs; the other reused it.
        assert sum(c["done"] for c in counts) == 8 and sum(c["skipped"] for c in counts) == 8, counts
    features = all_features(store)
    assert features.keys() == clean_features.keys()
    for uid, values in clean_features.items():
        np.testing.assert_array_equal(features[uid], values)
    assert not list(store.glob("**/.tmp*"))
    # `wsi-pipeline store verify`: every entry intact (arrays, chunks, checksums), none left incomplete.
    check = subprocess.run([sys.executable, "-m", "wsi_pipeline.cli.main", "store", "verify", str(store), "--json"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout[-2000:]
    report = json.loads(check.stdout)
    statuses = [entry["status"] for entry in report["entries"]]
    assert statuses.count("ok") == 16 and len(statuses) == 16, report
