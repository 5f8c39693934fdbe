"""A run killed mid-way (SIGKILL of the whole process group) resumes without redoing finished work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from wsi_pipeline.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]


def count_complete_features(store_root: Path) -> int:
    features = store_root / "features"
    if not features.is_dir():
        return 0
    store = FeatureStore(store_root)
    return sum(
        len(store.list_slides(f"features/{encoder.name}/{tiling.name}"))
        for encoder in features.iterdir() if encoder.is_dir()
        for tiling in encoder.iterdir() if tiling.is_dir()
    )


def test_killed_run_resumes_without_redoing_finished_slides(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": {"synthetic": {"n_patients": 10, "positive_fraction": 0.5, "width": 2048, "height": 2048, "n_levels": 3}},
        "output": "out",
        "seed": 1,
        "overrides": {"features": {"batch_size": 8}, "model": {"max_epochs": 5, "patience": 2},
                      "validation": {"n_folds": 2}, "scoring": {"bootstrap_resamples": 100}},
    }))
    command = [sys.executable, "-m", "wsi_pipeline.cli.main", "run", str(manifest)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store_root = tmp_path / "out" / "store"
    deadline = time.monotonic() + 240
    try:
        while count_complete_features(store_root) < 2:
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no slide was embedded in time"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the client and its Dask workers, with no chance to clean up
        first.wait()
    finished_before = count_complete_features(store_root)

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    extract = record["counts"]["extract"]
    assert extract["failed"] == 0
    total = len(list((tmp_path / "out" / "cohort").glob("*.tiff")))
    # Exactly the slides left incomplete by the kill are embedded again; finished ones are not.
    assert finished_before >= 2 and extract["skipped"] == finished_before
    assert extract["done"] == total - finished_before
    assert count_complete_features(store_root) == extract["done"] + extract["skipped"]
    assert "skipped" in second.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["abmil"]["auc"]["value"] is not None
