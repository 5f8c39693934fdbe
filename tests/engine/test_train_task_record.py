"""A training task writes its fold's checkpoint into the run folder and reports its training row and curves.

Called directly (no cluster): what runs on a worker. The bags come from an instance table of
24 bags x 5 instances x 8 features.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from wsi_pipeline.config.workflow import ModelConfig, ValidationConfig
from wsi_pipeline.engine.tasks import train_task
from wsi_pipeline.mil.checkpoint import HISTORY_FILE, MODEL_FILE, load_fold_model
from wsi_pipeline.mil.cohort_bags import load_bags
from wsi_pipeline.mil.external_bags import load_instance_table
from wsi_pipeline.mil.splits import plan_folds
from wsi_pipeline.mil.train import bag_outputs


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fold(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for b in range(24):
        label = b % 2
        for x in rng.normal(size=(5, 8)) + 0.7 * label:
            rows.append({"bag_id": f"bag{b:02d}", "label": label, **{f"f{j}": v for j, v in enumerate(x)}})
    pd.DataFrame(rows).to_csv(tmp_path / "bags.csv", index=False)
    loaded = load_instance_table(tmp_path / "bags.csv")  # binary on the label column by default
    targets = loaded.cohort.targets
    ids = sorted(targets)
    plan = plan_folds(ids, [targets[p] for p in ids], n_folds=3, seed=1, n_repeats=2)[4]  # repeat 1, fold 1
    return loaded, plan, targets


def run_task(loaded, plan, targets, out, **model_settings):
    model = ModelConfig(aggregators=["abmil"], max_epochs=2, patience=2, hidden_dim=8, device="cpu", **model_settings)
    outcome = train_task(plan, "abmil", loaded.source, {p: targets[p] for p in plan.patients}, loaded.cohort.task, model, 0, 1,
                         ValidationConfig(inner_folds=2), str(out))
    assert outcome.status == "done", outcome.reason
    return outcome


def test_the_task_writes_a_checkpoint_that_predicts_its_rows_and_reports_its_training(fold, tmp_path):
    loaded, plan, targets = fold
    outcome = run_task(loaded, plan, targets, tmp_path / "out")

    row, curves = outcome.info["training"], outcome.info["curves"]
    folder = tmp_path / "out" / row["checkpoint"]
    assert row["checkpoint"] == "training/repeat1-fold1-abmil" and (folder / MODEL_FILE).is_file()
    assert (row["model"], row["repeat"], row["fold"], row["device"], row["grid_chosen"]) == ("abmil", 1, 1, "cpu", None)
    assert row["epochs_run"] == len(curves["val_loss"]) == len(curves["train_loss"]) and row["best_epoch"] == curves["best_epoch"]
    assert row["best_val_loss"] == pytest.approx(curves["val_loss"][curves["best_epoch"]])
    history = json.loads((folder / HISTORY_FILE).read_text())
    assert history["val_loss"] == curves["val_loss"] and history["fold_seconds"] == pytest.approx(row["seconds"], abs=1e-3)
    assert history["features_id"] == loaded.source.features_id

    model, info = load_fold_model(folder)
    predictions = pd.DataFrame(outcome.info["predictions"])
    bags = load_bags(loaded.source, plan.test_ids)
    scores = info.task.predictions(bag_outputs(model, info.prepare(bags), list(predictions["patient_id"])))["score"]
    np.testing.assert_array_equal(scores, predictions["score"].to_numpy())


def test_with_a_grid_the_task_records_the_choice_and_every_points_inner_score(fold, tmp_path):
    loaded, plan, targets = fold
    outcome = run_task(loaded, plan, targets, tmp_path / "out", grid={"lr": [1e-4, 1e-2]})

    row = outcome.info["training"]
    history = json.loads((tmp_path / "out" / row["checkpoint"] / HISTORY_FILE).read_text())
    search = history["grid_search"]
    assert search["points"] == [{"lr": 1e-4}, {"lr": 1e-2}] and len(search["inner_losses"]) == 2
    assert json.loads(row["grid_chosen"]) == search["chosen"] == search["points"][int(np.argmin(search["scores"]))]
    assert json.loads(row["grid_scores"]) == pytest.approx(search["scores"])
    assert history["settings"]["lr"] == search["chosen"]["lr"]  # the checkpoint's settings are the chosen point's
    # No inner fold saw an outer test patient.
    assert all(sizes[0] + sizes[1] + sizes[2] == len(plan.fit_ids) + len(plan.val_ids) for sizes in search["inner_sizes"])
