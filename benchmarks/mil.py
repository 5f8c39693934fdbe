"""MIL training throughput: epoch time, peak memory and the share of the epoch spent loading bags.

A feature store of ``--bags`` bags of ``--instances`` x ``--dim`` float16 instances (default
200 x 10,000 x 1,024, 4.1 GB: a cohort of 200 slides embedded by a ViT-L) is written once into
``--workdir``. Then for every aggregator and each way of serving bags, a fresh process trains
one fold (80% of the bags fit, 20% validation; the workflow's defaults: ``max_instances`` 512
per training step, whole bags at validation, standardisation on) for ``--epochs`` epoch(s) on
the CPU and reports:

- ``epoch_seconds``: one epoch, training steps plus scoring the validation bags;
- ``data_share``: the part of it spent waiting for and preparing bags (reading, subsampling,
  standardising, copying to the device) rather than computing (target < 0.10);
- ``peak_rss_mb``: the process's peak resident memory;
- ``read_seconds``: reading the bags before the first epoch (memory mode: the whole cohort,
  once per run; streamed: the standardisation statistics' pass over the fit bags).

Modes: ``memory`` (bags read once into the worker, as when they fit ``model.bag_memory_gb``)
and ``streamed`` (read per step from Zarr, the next step's read prefetched; memory stays at a
step's bags). The baseline measured in the same run is ``naive``: the training path before
this benchmark existed, in memory, with each training bag standardised whole before being
subsampled (``--baseline``, one aggregator, abmil by default).

Usage::

    python benchmarks/mil.py [--bags 200] [--instances 10000] [--dim 1024] [--epochs 1]
                             [--aggregators abmil,meanpool] [--modes memory,streamed] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ENCODER, TILING = "benchmark-encoder", "benchmark-tiling"


def build_store(root: Path, n_bags: int, n_instances: int, dim: int) -> None:
    """Write the synthetic bags once (positives carry a shifted minority of instances); reused when complete."""
    from wsi_pipeline.store.feature_store import FeatureStore, features_key

    store = FeatureStore(root)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=dim).astype(np.float32)
    for i in range(n_bags):
        uid = f"slide-{i:04d}"
        if store.is_complete(features_key(ENCODER, TILING, uid)):
            continue
        features = rng.standard_normal((n_instances, dim), dtype=np.float32)
        if i % 2:
            features[: n_instances // 10] += direction
        writer = store.begin_features(ENCODER, TILING, uid, n_rows=n_instances, dim=dim, attrs={})
        writer.write(features)
        writer.complete()


def source_for(root: Path, n_bags: int) -> Any:
    from wsi_pipeline.mil.cohort_bags import StoreBagSource

    listing = tuple((f"P{i:04d}", (f"slide-{i:04d}",)) for i in range(n_bags))
    return StoreBagSource(listing, store_root=str(root), encoder_id=ENCODER, tiling_id=TILING)


class WholeBagStandardised:
    """The old view: every access standardises the whole bag (subsampling came after)."""

    def __init__(self, bags: Any, stats: Any) -> None:
        self._bags, self.stats = bags, stats

    def __getitem__(self, pid: str) -> np.ndarray:
        return (np.asarray(self._bags[pid], dtype=np.float32) - self.stats.mean) / self.stats.std

    def __contains__(self, pid: object) -> bool:
        return pid in self._bags

    def __iter__(self) -> Any:
        return iter(self._bags)

    def __len__(self) -> int:
        return len(self._bags)


def measure(root: Path, n_bags: int, aggregator: str, mode: str, epochs: int, threads: int) -> dict[str, Any]:
    """One (aggregator, mode) in this process: train one fold for ``epochs`` epochs on the CPU."""
    import torch

    from wsi_pipeline.config.workflow import ModelConfig
    from wsi_pipeline.mil.bag_cache import run_bags
    from wsi_pipeline.mil.standardise import StandardisedBags, fit_stats
    from wsi_pipeline.mil.train import TrainConfig, fit_aggregator

    torch.set_num_threads(threads)
    source = source_for(root, n_bags)
    ids = list(source.patients)
    labels = {p: i % 2 for i, p in enumerate(ids)}
    n_fit = int(0.8 * n_bags)
    fit_ids, val_ids = ids[:n_fit], ids[n_fit:]
    started = time.perf_counter()
    budget = 1 if mode == "streamed" else 2**62
    bags, plan = run_bags(source, ids, budget=budget)
    stats = fit_stats(bags, fit_ids)
    view: Any = WholeBagStandardised(bags, stats) if mode == "naive" else StandardisedBags(bags, stats)
    read_seconds = time.perf_counter() - started
    config = TrainConfig.from_model(ModelConfig(max_epochs=epochs, patience=epochs))
    _, history = fit_aggregator(aggregator, view, labels, fit_ids, val_ids, config, seed=0)
    epoch = float(np.mean(history["epoch_seconds"]))
    data = float(np.mean(history["data_seconds"]))
    return {
        "aggregator": aggregator,
        "mode": mode,
        "bag_mode": plan.mode,
        "epoch_seconds": round(epoch, 3),
        "data_seconds": round(data, 3),
        "data_share": round(data / epoch, 4),
        "read_seconds": round(read_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": threads,
    }


def in_child(root: Path, args: argparse.Namespace, aggregator: str, mode: str) -> dict[str, Any]:
    """:func:`measure` in a fresh process, so each peak memory is its own."""
    command = [
        sys.executable, __file__, "--child", "--workdir", str(args.workdir), "--bags", str(args.bags),
        "--instances", str(args.instances), "--dim", str(args.dim), "--epochs", str(args.epochs),
        "--aggregators", aggregator, "--modes", mode, "--threads", str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{aggregator}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=200)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--aggregators", default="", help="comma-separated; default: every registered aggregator")
    parser.add_argument("--modes", default="memory,streamed")
    parser.add_argument("--baseline", default="abmil", help="aggregator measured the old way (naive); '' for none")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "wsi-mil-benchmark")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.workdir / f"store-{args.bags}x{args.instances}x{args.dim}"
    modes = [m for m in args.modes.split(",") if m]

    if args.child:
        print(json.dumps(measure(root, args.bags, args.aggregators, modes[0], args.epochs, args.threads)))
        return

    from wsi_pipeline.mil.registry import available_aggregators

    aggregators = [a for a in args.aggregators.split(",") if a] or list(available_aggregators())
    started = time.perf_counter()
    build_store(root, args.bags, args.instances, args.dim)
    print(f"store: {args.bags} bags of {args.instances} x {args.dim} float16 in {root} ({time.perf_counter() - started:.1f} s)")
    rows = []
    if args.baseline:
        rows.append(in_child(root, args, args.baseline, "naive"))
    for aggregator in aggregators:
        for mode in modes:
            rows.append(in_child(root, args, aggregator, mode))
            row = rows[-1]
            print(
                f"{aggregator:>12} {mode:>8}: epoch {row['epoch_seconds']:8.2f} s, data {100 * row['data_share']:5.1f}%, "
                f"peak {row['peak_rss_mb']:8.1f} MB, first read {row['read_seconds']:.1f} s",
                flush=True,
            )
    result: dict[str, Any] = {
        "bags": args.bags, "instances": args.instances, "dim": args.dim, "dtype": "float16", "epochs": args.epochs,
        "threads": args.threads, "rows": rows,
        "max_data_share": max(r["data_share"] for r in rows if r["mode"] != "naive"),
    }
    naive = [r for r in rows if r["mode"] == "naive"]
    same = [r for r in rows if naive and r["aggregator"] == naive[0]["aggregator"] and r["mode"] == "memory"]
    if naive and same:
        result["baseline"] = {
            "aggregator": naive[0]["aggregator"],
            "naive_epoch_seconds": naive[0]["epoch_seconds"],
            "naive_data_share": naive[0]["data_share"],
            "memory_epoch_seconds": same[0]["epoch_seconds"],
            "speedup": round(naive[0]["epoch_seconds"] / same[0]["epoch_seconds"], 3),
        }
        print(f"baseline ({naive[0]['aggregator']}, whole-bag standardisation): epoch {naive[0]['epoch_seconds']:.2f} s, "
              f"data {100 * naive[0]['data_share']:.1f}% -> x{result['baseline']['speedup']:.2f} faster now")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
