"""The leaderboard of runs: ranking, paired tests against the leader, files, and errors (via the CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error

from wsi_pipeline.cli.main import main
from wsi_pipeline.scoring.stage import score_predictions

N = 40


def make_run(folder: Path, task: dict, models: dict[str, float], *, regression: bool = False, seed: int = 0) -> Path:
    """A scored run folder: predictions.csv, metrics.json (the score stage) and run.json (the task)."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:02d}" for i in range(N)]
    frames = []
    for model, strength in models.items():
        if regression:
            target = np.linspace(-1, 1, N)
            frames.append(pd.DataFrame({"patient_id": ids, "model": model, "fold": np.arange(N) % 4, "target": target,
                                        "prediction": target + rng.normal(0, strength, N)}))
        else:
            y = np.arange(N) % 2
            frames.append(pd.DataFrame({"patient_id": ids, "model": model, "fold": np.arange(N) % 4, "label": y,
                                        "score": 1 / (1 + np.exp(-(rng.normal(0, 1, N) + strength * (y - 0.5) * 2)))}))
    table = pd.concat(frames, ignore_index=True)
    folder.mkdir(parents=True)
    table.to_csv(folder / "predictions.csv", index=False)
    from wsi_pipeline.mil.tasks.registry import build_task

    # The plots are not what is compared here; skipping them keeps the test fast.
    with mock.patch("wsi_pipeline.scoring.plots.plot_task"), mock.patch("wsi_pipeline.scoring.plots.plot_km"):
        score_predictions(table, folder, n_resamples=100, task=build_task(task))
    (folder / "run.json").write_text(json.dumps({"config": {"workflow": {"task": task, "scoring": {"threshold": 0.5}}}}))
    return folder


def test_binary_runs_are_ranked_and_tested_against_the_leader(tmp_path, capsys):
    a = make_run(tmp_path / "uni", {"type": "binary"}, {"abmil": 2.0, "meanpool": 0.0})
    b = make_run(tmp_path / "resnet", {"type": "binary"}, {"abmil": 0.3}, seed=1)
    assert main(["compare", str(a), str(b), "--output", str(tmp_path / "board"), "--n-resamples", "200"]) == 0
    board = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert board["value"].is_monotonic_decreasing and list(board["rank"]) == [1, 2, 3]
    assert (board.loc[0, "run"], board.loc[0, "model"]) == ("uni", "abmil")
    assert np.isnan(board.loc[0, "p_vs_leader"]) and (board["p_vs_leader"][1:] < 0.05).all()
    metrics = json.loads((a / "metrics.json").read_text())
    assert board.loc[0, "value"] == pytest.approx(metrics["abmil"]["auc"]["value"])  # the run's own number
    comparisons = json.loads((tmp_path / "board" / "comparisons.json").read_text())
    assert {c["entry"] for c in comparisons} == {"uni/meanpool", "resnet/abmil"}
    for c in comparisons:
        assert c["leader"] == "uni/abmil" and c["n_patients"] == N and c["delong_p"] < 0.05 and c["difference"]["value"] > 0
    printed = capsys.readouterr().out  # the table, one line per row when captured
    assert "uni" in printed and "(leader)" in printed and "DeLong" in printed
    assert "Leaderboard: AUC" in (tmp_path / "board" / "leaderboard.md").read_text()
    assert (tmp_path / "board" / "leaderboard.html").read_text().count("<tr>") == 4


def test_an_error_metric_ranks_lowest_first_and_its_difference_is_the_metrics(tmp_path):
    task = {"type": "regression", "target_column": "target"}
    a = make_run(tmp_path / "a", task, {"abmil": 0.1}, regression=True)
    b = make_run(tmp_path / "b", task, {"abmil": 0.6}, regression=True, seed=1)
    assert main(["compare", str(b), str(a), "--output", str(tmp_path / "board"), "--n-resamples", "100"]) == 0
    board = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert list(board["run"]) == ["a", "b"] and board.loc[0, "metric"] == "mae"
    [comparison] = json.loads((tmp_path / "board" / "comparisons.json").read_text())
    pa, pb = (pd.read_csv(f / "predictions.csv") for f in (a, b))
    expected = mean_absolute_error(pa["target"], pa["prediction"]) - mean_absolute_error(pb["target"], pb["prediction"])
    assert comparison["difference"]["value"] == pytest.approx(expected) and comparison["bootstrap_p"] < 0.05
    assert comparison["delong_p"] is None and comparison["test"] == "paired bootstrap"


def test_unscored_folder_or_mixed_tasks_exit_2(tmp_path, capsys):
    a = make_run(tmp_path / "a", {"type": "binary"}, {"abmil": 1.0})
    assert main(["compare", str(a), str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
    assert "nothing: not a finished run: no such folder" in capsys.readouterr().err
    r = make_run(tmp_path / "r", {"type": "regression", "target_column": "target"}, {"abmil": 0.2}, regression=True)
    assert main(["compare", str(a), str(r), "--output", str(tmp_path / "o")]) == 2
    assert "different tasks" in capsys.readouterr().err
