"""training.csv: one row per (repeat, fold, aggregator), from each fold's history; the curves figure from the same."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import torch

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.mil.cv import train_fold
from wsi_pipeline.mil.splits import plan_folds
from wsi_pipeline.mil.train import TrainConfig
from wsi_pipeline.mil.training_record import (
    TRAINING_COLUMNS,
    TRAINING_FILE,
    record_fold,
    remove_stale_checkpoints,
    training_row,
    write_training_table,
)
from wsi_pipeline.scoring.training_plot import plot_training_curves


def test_each_trained_fold_gives_a_row_and_a_checkpoint_and_the_table_has_them_all(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(24)]
    labels = {pid: i % 2 for i, pid in enumerate(ids)}
    bags = {pid: (rng.normal(size=(5, 8)) + labels[pid]).astype(np.float16) for pid in ids}
    plans = plan_folds(ids, [labels[p] for p in ids], n_folds=3, seed=0, n_repeats=2)
    config = TrainConfig.from_model(ModelConfig(max_epochs=2, patience=1, hidden_dim=8))
    rows, curves = [], []
    for plan in plans:
        for aggregator in ("meanpool", "abmil"):
            history = train_fold(plan, aggregator, bags, labels, config, seed=0).attrs["history"]
            outcome = record_fold(history, plan=plan, aggregator=aggregator, config=config, output_dir=tmp_path,
                                  features_id="f", device="cpu", seconds=1.25)
            rows.append(outcome["training"])
            curves.append({"model": aggregator, "repeat": plan.repeat, "fold": plan.fold, **outcome["curves"]})

    write_training_table(rows, tmp_path / TRAINING_FILE)
    table = pd.read_csv(tmp_path / TRAINING_FILE)

    assert tuple(table.columns) == TRAINING_COLUMNS and len(table) == 2 * 3 * 2
    assert list(table.groupby("model").size()) == [6, 6]
    assert list(table["model"]) == ["abmil"] * 6 + ["meanpool"] * 6  # by model, repeat, fold
    assert list(table["repeat"][:6]) == [0, 0, 0, 1, 1, 1] and list(table["fold"][:6]) == [0, 1, 2, 0, 1, 2]
    assert (table["seconds"] == 1.25).all() and (table["device"] == "cpu").all() and table["grid_chosen"].isna().all()
    assert set(table["checkpoint"]) == {f"training/{p.name}-{a}" for p in plans for a in ("meanpool", "abmil")}
    assert all((tmp_path / path / "model.pt").is_file() and (tmp_path / path / "history.json").is_file() for path in table["checkpoint"])
    assert (table["epochs_run"] >= table["best_epoch"] + 1).all()
    row = table.iloc[0]
    history = json.loads((tmp_path / row["checkpoint"] / "history.json").read_text())
    assert row["best_val_loss"] == history["val_loss"][history["best_epoch"]] and bool(row["stopped_early"]) == history["stopped_early"]

    path = plot_training_curves(curves, tmp_path / "plots" / "training_curves.png", caption="demo")
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert path.stat().st_size > 5000 and (width, height) == (2 * 5 * 150, int(4.2 * 150))  # one panel per aggregator


def test_a_row_with_a_grid_records_the_choice_and_writes_undefined_numbers_as_empty():
    from wsi_pipeline.mil.splits import FoldPlan

    history = {"best_epoch": 1, "epochs_run": 3, "stopped_early": True, "best_val_loss": 0.4, "best_val_score": math.nan,
               "selection_metric": "auc",
               "grid_search": {"chosen": {"lr": 0.001}, "scores": [0.5, 0.4, math.inf]}}
    row = training_row(history, plan=FoldPlan(2, (), (), (), repeat=1), aggregator="abmil", seconds=3.14159, device="cuda",
                       checkpoint=None)
    assert row["best_val_score"] is None and row["seconds"] == 3.142 and (row["repeat"], row["fold"]) == (1, 2)
    assert json.loads(row["grid_chosen"]) == {"lr": 0.001} and json.loads(row["grid_scores"]) == [0.5, 0.4, None]


def test_stale_fold_folders_are_removed_and_anything_else_is_left_alone(tmp_path):
    for name in ("fold0-abmil", "fold4-abmil", "fold1-clam-sb"):
        (tmp_path / "training" / name).mkdir(parents=True)
        (tmp_path / "training" / name / "model.pt").write_bytes(b"x")
        (tmp_path / "training" / name / "history.json").write_text("{}")
    (tmp_path / "training" / "mine").mkdir()
    (tmp_path / "training" / "mine" / "notes.txt").write_text("keep me")

    removed = remove_stale_checkpoints(tmp_path, ["training/fold0-abmil"])

    assert sorted(p.name for p in removed) == ["fold1-clam-sb", "fold4-abmil"]
    assert sorted(p.name for p in (tmp_path / "training").iterdir()) == ["fold0-abmil", "mine"]
    assert (tmp_path / "training" / "mine" / "notes.txt").read_text() == "keep me"
