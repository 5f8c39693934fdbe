"""A run killed mid-way (SIGKILL of the whole process group) resumes without redoing finished work,
and its outputs equal those of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from wsi_pipeline.store import FeatureStore


def same_settings_as(clean_manifest: Path, output: Path) -> Path:
    """A manifest with the undisturbed run's settings, writing to ``output``."""
    data = yaml.safe_load(clean_manifest.read_text())
    data["output"] = str(output)
    path = output.parent / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def store_features(store_root: Path) -> dict[str, np.ndarray]:
    """Every complete feature entry of a store, by slide entry."""
    features = store_root / "features"
    if not features.is_dir():
        return {}
    store = FeatureStore(store_root)
    return {
        uid: store.read_features(encoder.name, tiling.name, uid).features
        for encoder in features.iterdir() if encoder.is_dir()
        for tiling in encoder.iterdir() if tiling.is_dir()
        for uid in store.list_slides(f"features/{encoder.name}/{tiling.name}")
    }


def count_complete_features(store_root: Path) -> int:
    return len(store_features(store_root))


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_slides_and_equals_an_uninterrupted_run(tmp_path, clean_run):
    clean = Path(yaml.safe_load(clean_run.read_text())["output"])  # the undisturbed run, same settings (conftest)
    command = [sys.executable, "-m", "wsi_pipeline.cli.main", "run", str(same_settings_as(clean_run, tmp_path / "out"))]
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

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    extract = record["counts"]["extract"]
    assert extract["failed"] == 0
    # Exactly the slides left incomplete by the kill are embedded again; finished ones are not.
    assert 2 <= finished_before < 8 and extract["skipped"] == finished_before
    assert extract["done"] == 8 - finished_before
    assert "skipped" in second.stderr

    # The resumed run's outputs are the uninterrupted run's: features, predictions, metrics.
    resumed, reference = store_features(store_root), store_features(clean / "store")
    assert resumed.keys() == reference.keys() and len(resumed) == 8
    for uid, values in reference.items():
        np.testing.assert_array_equal(resumed[uid], values)
    columns = ["patient_id", "model", "fold", "label"]
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv").sort_values(columns, ignore_index=True)
    expected = pd.read_csv(clean / "predictions.csv").sort_values(columns, ignore_index=True)
    pd.testing.assert_frame_equal(predictions, expected, atol=1e-6, rtol=0)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["abmil"]["auc"]["value"] is not None
    assert metrics == json.loads((clean / "metrics.json").read_text())
