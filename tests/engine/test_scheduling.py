"""Where tasks run: GPU slots on the local cluster, tile and extract overlapping, threads sharing one encoder."""

from __future__ import annotations

import json
import os
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from rich.console import Console

from wsi_pipeline.cohort.table import load_cohort
from wsi_pipeline.config import ClusterConfig, load_run_config
from wsi_pipeline.engine import cluster as cluster_module
from wsi_pipeline.engine.cluster import (
    GPU_SLOT,
    cluster_layout,
    dask_client,
    local_worker_specs,
)
from wsi_pipeline.engine.runner import (
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    encoder_id_of,
    run_pipeline,
)
from wsi_pipeline.engine.tasks import TILING_FAILED, extract_task
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.synthetic import generate_cohort
from wsi_pipeline.store import FeatureStore
from wsi_pipeline.tiling.slide_tiling import tiling_id

REPO = Path(__file__).resolve().parents[2]


def write_manifest(folder: Path, table: Path, cluster: dict) -> Path:
    manifest = {
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": {"table": str(table)},
        "output": "out",
        "cluster": cluster,
        "seed": 1,
    }
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def small_cohort(folder: Path, n_patients: int = 4, size: int = 1024) -> Path:
    return generate_cohort(folder, n_patients=n_patients, seed=4, positive_fraction=0.5, two_slide_fraction=0.0,
                           width=size, height=size, n_levels=3)


# -- the local cluster's layout ------------------------------------------------------------------
def test_two_gpus_give_two_gpu_workers_each_seeing_its_own(monkeypatch):
    monkeypatch.setattr(cluster_module, "count_gpus", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    specs = local_worker_specs(ClusterConfig(n_workers=3, threads_per_worker=1))
    assert list(specs) == ["gpu-0", "gpu-1", "cpu-0", "cpu-1", "cpu-2"]
    options = {name: spec["options"] for name, spec in specs.items()}
    assert [options[f"gpu-{i}"]["env"]["CUDA_VISIBLE_DEVICES"] for i in (0, 1)] == ["0", "1"]
    assert all(options[f"gpu-{i}"]["resources"] == {"GPU": 1} and options[f"gpu-{i}"]["nthreads"] == 2 for i in (0, 1))
    # CPU workers tile: they see no GPU and hold no encoder slot, so extraction goes to the GPUs only.
    for i in range(3):
        assert "resources" not in options[f"cpu-{i}"] and options[f"cpu-{i}"]["env"]["CUDA_VISIBLE_DEVICES"] == ""
        assert options[f"cpu-{i}"]["nthreads"] == 1


def test_gpu_workers_follow_the_gpus_this_process_was_given(monkeypatch):
    monkeypatch.setattr(cluster_module, "count_gpus", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # e.g. a SLURM allocation
    specs = local_worker_specs(ClusterConfig(n_workers=1, gpus=1, threads_per_gpu_worker=3))
    assert list(specs) == ["gpu-0", "cpu-0"]
    assert specs["gpu-0"]["options"]["env"] == {"CUDA_VISIBLE_DEVICES": "2"} and specs["gpu-0"]["options"]["nthreads"] == 3
    with pytest.raises(WSIPipelineError, match="cluster.gpus is 3 but this machine shows 2"):
        local_worker_specs(ClusterConfig(gpus=3))


def test_without_gpus_every_cpu_worker_holds_one_encoder_slot(monkeypatch):
    monkeypatch.setattr(cluster_module, "count_gpus", lambda: 2)
    specs = local_worker_specs(ClusterConfig(n_workers=2, threads_per_worker=2, gpus=0))
    assert list(specs) == ["cpu-0", "cpu-1"]
    assert all(s["options"]["resources"] == {"GPU": 1} and s["options"]["nthreads"] == 2 for s in specs.values())


def test_a_gpu_annotated_task_runs_on_a_cpu_only_local_cluster(monkeypatch):
    monkeypatch.setattr(cluster_module, "count_gpus", lambda: 0)  # as on this CPU-only machine, wherever it runs
    with dask_client(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        future = client.submit(lambda x: x * 7, 6, resources=GPU_SLOT, pure=False)
        assert future.result(timeout=60) == 42
        workers = client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in workers] == [{"GPU": 1}]
        assert [w["name"] for w in workers] == ["cpu-0"]
        assert client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"]) == {w: "" for w in client.scheduler_info()["workers"]}
        layout = cluster_layout(client)
    assert layout.description == "local cluster: 1 CPU worker x 1 thread, 0 GPU workers (encoder on CPU)"
    assert layout.encoder_resources == {"GPU": 1} and layout.warning is None and layout.dashboard is None
    # The CPU stands in for the GPU: MIL training on 'auto' is not pinned to the encoder slots.
    assert layout.training_resources("auto") is None


# -- tile and extract overlap ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def overlapped_run(tmp_path_factory):
    """Tile and extract 4 slides plus one without µm/px (its tiling fails) on 1 worker x 1 thread."""
    folder = tmp_path_factory.mktemp("overlap")
    table = small_cohort(folder / "cohort")
    rows = pd.read_csv(table, dtype={"patient_id": str})
    tifffile.imwrite(folder / "cohort" / "plain.tiff", np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    extra = pd.DataFrame([{"patient_id": "X", "slide_id": "plain", "slide_path": "plain.tiff", "label": 0}])
    pd.concat([rows, extra]).to_csv(table, index=False)
    manifest = write_manifest(folder, table, {"n_workers": 1, "threads_per_worker": 1, "gpus": 0})
    text = StringIO()  # not a terminal: the progress is logged as lines
    result = run_pipeline(load_run_config(manifest), stages=("tile", "extract"), console=Console(file=text, width=200))
    return result, text.getvalue(), list(rows["slide_id"])


def test_extraction_starts_before_the_cohort_is_tiled(overlapped_run):
    result, console, slides = overlapped_run
    tiles = {o.item: o for o in result.record.outcomes if o.stage == "tile"}
    extracts = {o.item: o for o in result.record.outcomes if o.stage == "extract"}
    assert all(extracts[s].status == "done" for s in slides)
    last_tiling_finished = max(o.finished for o in tiles.values())
    assert min(extracts[s].started for s in slides) < last_tiling_finished
    for slide in slides:  # and each slide waited for its own tiling
        assert extracts[slide].started >= tiles[slide].finished
    timings = result.record.timings
    assert timings["tile"] > 0 and timings["extract"] > 0
    assert result.record.wall_seconds >= max(timings["tile"], timings["extract"])
    assert "tile: 5/5 tasks finished" in console and "extract: 5/5 tasks finished" in console
    assert "tile and extract overlap" in console
    assert "local cluster: 1 CPU worker x 1 thread, 0 GPU workers (encoder on CPU)" in console


def test_a_slide_whose_tiling_fails_fails_once_and_is_not_extracted(overlapped_run):
    result, console, slides = overlapped_run
    assert result.exit_code == EXIT_ITEMS_FAILED
    (failure,) = result.record.failures
    assert (failure.stage, failure.item) == ("tile", "plain") and "µm/px" in failure.reason
    (blocked,) = [o for o in result.record.outcomes if o.stage == "extract" and o.item == "plain"]
    assert blocked.status == "blocked" and blocked.reason == TILING_FAILED and "slide_uid" not in blocked.info
    assert result.record.count("extract") == {"done": len(slides), "skipped": 0, "failed": 0, "blocked": 1}
    record = json.loads((result.output_dir / "run.json").read_text())
    assert [(f["stage"], f["item"]) for f in record["failed"]] == [("tile", "plain")]
    assert record["blocked"] == [{"stage": "extract", "item": "plain", "reason": TILING_FAILED}]
    assert record["counts"]["extract"]["blocked"] == 1 and record["status"] == "failed items"
    assert "extract: 4 done, 1 not run" in console and "1 item(s) failed" in console
    qc = pd.read_csv(result.output_dir / "qc" / "tiling_qc.csv")
    assert sorted(qc["slide_id"]) == sorted([*slides, "plain"])


# -- several threads per worker -------------------------------------------------------------------
def test_two_threads_of_one_worker_share_one_encoder(tmp_path):
    table = small_cohort(tmp_path / "cohort", n_patients=2, size=768)
    manifest = write_manifest(tmp_path, table, {"n_workers": 1, "threads_per_worker": 2, "gpus": 0})
    config = load_run_config(manifest)
    result = run_pipeline(config, stages=("tile", "extract"), console=Console(file=StringIO()))
    assert result.exit_code == EXIT_OK
    expected = encoder_id_of(config)
    extracts = [o for o in result.record.outcomes if o.stage == "extract"]
    assert len(extracts) == 2 and all(o.status == "done" and o.info["encoder_id"] == expected for o in extracts)

    # The engine embeds one slide per worker at a time (one GPU slot); submitted without the
    # slot, the worker's two threads build the encoder at once, which is what its lock is for.
    store_root = tmp_path / "again"
    shutil.copytree(config.store_path, store_root)
    shutil.rmtree(store_root / "features")
    tid = tiling_id(config.workflow.tiling)
    FeatureStore(store_root).prepare(f"features/{expected}/{tid}")
    records = load_cohort(table, table.parent, "label").slide_records()
    features = config.workflow.features
    with dask_client(config.manifest.cluster) as client:
        futures = [
            client.submit(extract_task, r, "wsi", tid, config.workflow.tiling.tile_px, features, expected, str(store_root), 2, pure=False)
            for r in records
        ]
        outcomes = client.gather(futures)
    assert [o.status for o in outcomes] == ["done"] * 2, [o.reason for o in outcomes]
    first, again = FeatureStore(config.store_path), FeatureStore(store_root)
    for outcome in outcomes:
        uid = outcome.info["slide_uid"]
        assert np.array_equal(first.read_features(expected, tid, uid).features[:], again.read_features(expected, tid, uid).features[:])
