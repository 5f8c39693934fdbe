"""`wsi-pipeline run` on an instance table: train and score only, on a real Dask cluster.

A MUSK-like toy: 20 bags of 2-10 instances with 8 features; a positive bag holds at least one
instance shifted far from the others, so both aggregators must separate the bags.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from rich.console import Console

from wsi_pipeline.config import load_run_config
from wsi_pipeline.engine.runner import EXIT_OK, run_pipeline


def musk_like(path: Path, n_bags: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(n_bags):
        label = b % 2
        n = int(rng.integers(2, 11))
        x = rng.normal(size=(n, 8))
        if label:
            x[: max(1, n // 2)] += 4.0
        rows += [{"bag_id": f"bag{b:02d}", "label": label, **{f"f{j}": v for j, v in enumerate(row)}} for row in x]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_instance_table_run_trains_and_scores(tmp_path):
    musk_like(tmp_path / "musk.csv")
    manifest = {
        "workflow": "mil_benchmark",
        "cohort": {"instances": "musk.csv"},
        "output": "out",
        "cluster": {"n_workers": 1, "threads_per_worker": 1, "gpus": 0},
        "seed": 1,
        "overrides": {
            "model": {"max_epochs": 15, "patience": 5, "hidden_dim": 16, "device": "cpu"},
            "validation": {"n_folds": 4, "n_repeats": 1},
            "scoring": {"bootstrap_resamples": 100},
        },
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest))
    config = load_run_config(tmp_path / "m.yaml")
    with open("/dev/null", "w") as sink:
        result = run_pipeline(config, console=Console(file=sink))
    assert result.exit_code == EXIT_OK, [f.reason for f in result.record.failures]
    out = config.output_dir
    record = json.loads((out / "run.json").read_text())
    assert set(record["counts"]) == {"train", "score"}  # no tile, no extract
    assert not (out / "store").exists()
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["model"]) == {"abmil", "meanpool"} and len(predictions) == 40
    assert set(predictions["encoder"]) == {"instances:musk.csv"}
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("abmil", "meanpool"):
        assert metrics[model]["auc"]["value"] >= 0.9, metrics[model]["auc"]
    assert "instance table" in (out / "report.md").read_text()
    # Every fold's checkpoint, curves and chosen epoch are kept (issue 9 point 4).
    training = pd.read_csv(out / "training.csv")
    assert len(training) == 4 * 2 and set(training["model"]) == {"abmil", "meanpool"}
    assert all((out / path / "model.pt").is_file() and (out / path / "history.json").is_file() for path in training["checkpoint"])
    assert (out / "plots" / "training_curves.png").stat().st_size > 5000
    assert "plots/training_curves.png" in (out / "report.md").read_text()
    assert all("curves" not in item["info"] for item in record["items"] if item["stage"] == "train")  # not in run.json
