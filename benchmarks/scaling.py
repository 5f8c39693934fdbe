"""Scaling of the engine: the tile stage on one worker against two, and Dask's cost per task.

Two measurements, both in this run (only their ratios and orders of magnitude mean much):

1. **Tile-stage throughput**: a synthetic cohort of ``--slides`` slides (``--size`` px a side,
   generated once into ``--workdir``) is tiled by ``run_pipeline`` on a local cluster of one
   worker, then of two (one thread each, a fresh store each time); slides per second and their
   ratio (target on a 2-core machine: >= 1.7).
2. **Scheduling overhead** for a planned cohort of ``--plan`` slides (default 10,000): tasks
   carrying exactly what a tile task carries (slide record, tiling config, ids, paths) but doing
   nothing, submitted and awaited through the engine's ``submit_tasks``/``wait_for`` on a local
   cluster of two workers; milliseconds per task (target < 5), and the scheduler's resident
   memory before and after the plan was submitted.

Usage::

    python benchmarks/scaling.py [--slides 12] [--size 2048] [--plan 10000] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from io import StringIO
from pathlib import Path
from typing import Any

import yaml
from distributed import Client, LocalCluster
from rich.console import Console

from wsi_pipeline.cohort.table import SlideRecord
from wsi_pipeline.config import TilingConfig, load_run_config
from wsi_pipeline.engine.outcome import ItemOutcome
from wsi_pipeline.engine.progress import submit_tasks, wait_for
from wsi_pipeline.engine.runner import run_pipeline
from wsi_pipeline.sources.synthetic import generate_cohort

REPO = Path(__file__).resolve().parent.parent


def tile_rate(table: Path, workdir: Path, workers: int) -> float:
    """Slides per second of the tile stage on ``workers`` one-thread workers, fresh store."""
    run_dir = workdir / f"run-{workers}w"
    manifest = {
        "workflow": str(REPO / "workflows" / "demo.yaml"),
        "cohort": {"table": str(table)},
        "output": str(run_dir),
        "store": str(run_dir / f"store-{time.time_ns()}"),
        "cluster": {"n_workers": workers, "threads_per_worker": 1, "gpus": 0},
    }
    path = workdir / f"manifest-{workers}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = run_pipeline(load_run_config(path), stages=("tile",), console=Console(file=StringIO()))
    n = sum(o.status == "done" for o in result.record.outcomes if o.stage == "tile")
    return n / result.record.timings["tile"]


def noop_tile(record: SlideRecord, source_name: str, config: TilingConfig, tid: str, params: dict,
              store_root: str, qc_dir: str) -> ItemOutcome:
    """A task with a tile task's arguments and no work: what is left is Dask's cost."""
    return ItemOutcome("tile", record.slide_id, "done")


def scheduler_rss_mb(client: Client) -> float:
    def rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    return client.run_on_scheduler(rss) / 1024


def scheduling_overhead(n: int) -> dict[str, float]:
    """Milliseconds per task and the scheduler's memory for a plan of ``n`` slides."""
    config = TilingConfig()
    items = [
        (f"slide-{i:05d}", (SlideRecord(f"slide-{i:05d}", f"patient-{i // 2:05d}", Path(f"/data/slides/slide-{i:05d}.svs")),
                            "wsi", config, "tiling-id", {"mpp": 0.5}, "/data/store", "/data/run/qc"))
        for i in range(n)
    ]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_port=0, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        before = scheduler_rss_mb(client)
        started = time.perf_counter()
        batch = submit_tasks(client, "tile", noop_tile, items)
        submitted = time.perf_counter()
        after = scheduler_rss_mb(client)
        wait_for([batch], Console(file=StringIO()))
        elapsed = time.perf_counter() - started
        assert len(batch.results()) == n
    return {
        "tasks": n,
        "ms_per_task": round(1000 * elapsed / n, 3),
        "submit_ms_per_task": round(1000 * (submitted - started) / n, 3),
        "scheduler_rss_mb_before": round(before, 1),
        "scheduler_rss_mb_with_plan": round(after, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=12)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--plan", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scaling-bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    table = args.workdir / f"cohort-{args.slides}-{args.size}" / "cohort.csv"
    if not table.is_file():
        table = generate_cohort(table.parent, n_patients=args.slides, seed=0, two_slide_fraction=0.0,
                                width=args.size, height=args.size, n_levels=3)
    one, two = tile_rate(table, args.workdir, 1), tile_rate(table, args.workdir, 2)
    results = {
        "cpu_cores": os.cpu_count(),
        "tile_stage": {"slides": args.slides, "size_px": args.size, "one_worker_slides_per_s": round(one, 3),
                       "two_workers_slides_per_s": round(two, 3), "speedup": round(two / one, 2)},
        "scheduling": scheduling_overhead(args.plan),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
