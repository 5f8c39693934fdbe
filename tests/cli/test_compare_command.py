"""``wsi-pipeline compare`` on run folders made by hand: the leaderboard's order and columns, and each refusal (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.cli.main import main

IDS = [f"P{i:02d}" for i in range(12)]
LABELS = np.arange(12) % 2


def entry(value: float, half: float = 0.1) -> dict:
    return {"value": value, "ci_low": value - half, "ci_high": value + half}


def write_run(folder: Path, metrics: dict, *, task: dict | None = None, ids: list[str] = IDS, labels=LABELS,
              encoder: str = "uni-1234", finished: str = "2026-11-28T10:00:00+00:00", score_column: str = "score") -> Path:
    """A finished run folder as the engine leaves it: predictions.csv, metrics.json, run.json."""
    folder.mkdir(parents=True)
    rows = [pd.DataFrame({"patient_id": ids, "model": model, "repeat": 0, "fold": 0, "label": labels,
                          score_column: np.linspace(0.1, 0.9, len(ids))[::-1 if k % 2 else 1], "encoder": encoder})
            for k, model in enumerate(metrics)]
    pd.concat(rows).to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    workflow = {"task": task or {"type": "binary", "label_column": "label"}, "scoring": {"threshold": 0.5}}
    (folder / "run.json").write_text(json.dumps({"status": "ok", "finished": finished, "config": {"workflow": workflow}}))
    return folder


def binary_metrics(auc: float, accuracy: float) -> dict:
    return {"auc": entry(auc), "accuracy": entry(accuracy), "balanced_accuracy": entry(accuracy), "n_patients": 12}


def test_the_leaderboard_ranks_every_run_and_model_by_the_runs_own_metrics(tmp_path, capsys):
    a = write_run(tmp_path / "uni", {"abmil": binary_metrics(0.81, 0.7), "meanpool": binary_metrics(0.64, 0.6)})
    b = write_run(tmp_path / "resnet", {"abmil": binary_metrics(0.72, 0.65)}, encoder="resnet50-99", finished="2026-11-29T08:30:00+00:00")
    assert main(["compare", str(b), str(a), "--output", str(tmp_path / "board"), "--n-resamples", "100"]) == 0
    board = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert list(zip(board["run"], board["model"], strict=True)) == [("uni", "abmil"), ("resnet", "abmil"), ("uni", "meanpool")]
    assert list(board["value"]) == [0.81, 0.72, 0.64] and list(board["ci_low"]) == pytest.approx([0.71, 0.62, 0.54])
    assert list(board["accuracy"]) == [0.7, 0.65, 0.6] and list(board["accuracy_ci_high"]) == pytest.approx([0.8, 0.75, 0.7])
    assert list(board["encoder"]) == ["uni-1234", "resnet50-99", "uni-1234"] and board.loc[1, "finished"].startswith("2026-11-29T08:30")
    assert list(board["n_patients"]) == [12, 12, 12] and list(board["shared_patients"]) == [12, 12, 12]
    assert list(board["test"]) == ["the leader", "DeLong", "DeLong"] and np.isnan(board.loc[0, "p_vs_leader"])
    printed = capsys.readouterr().out
    assert printed.index("resnet50-99") < printed.index("meanpool") and "(leader)" in printed
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| 1 | uni | abmil | uni-1234 | 0.810 [0.710, 0.910] | 0.700 [0.600, 0.800] |" in markdown
    assert (tmp_path / "board" / "leaderboard.html").read_text().count("<tr>") == 4


def test_metric_chooses_the_ranking_and_without_output_nothing_is_written(tmp_path, capsys):
    a = write_run(tmp_path / "a", {"abmil": binary_metrics(0.9, 0.6)})
    b = write_run(tmp_path / "b", {"abmil": binary_metrics(0.7, 0.8)})
    assert main(["compare", str(a), str(b), "--metric", "accuracy", "--n-resamples", "100"]) == 0
    out, err = capsys.readouterr()
    assert out.index("0.800") < out.index("0.600") and "paired bootstrap" in out and "nothing written" in err
    assert not list(tmp_path.glob("leaderboard*"))


def write_without_run_json(folder: Path) -> Path:
    write_run(folder, {"abmil": binary_metrics(0.7, 0.6)})
    (folder / "run.json").unlink()
    return folder


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (write_without_run_json, "b: not a finished run: no run.json"),
        (lambda f: write_run(f, {"abmil": {"mae": entry(1.0), "n_patients": 12}}, task={"type": "regression", "target_column": "label"},
                           score_column="prediction"),
         "b: is a regression run but"),
        (lambda f: write_run(f, {"abmil": binary_metrics(0.7, 0.6)}, ids=[f"Q{i}" for i in range(12)]),
         "b: shares no patient with"),
    ],
    ids=["unfinished", "other-task", "no-shared-patient"],
)
def test_folders_that_cannot_be_compared_exit_2_naming_the_folder(tmp_path, capsys, make, message):
    a = write_run(tmp_path / "a", {"abmil": binary_metrics(0.8, 0.6)})
    make(tmp_path / "b")
    assert main(["compare", str(a), str(tmp_path / "b"), "--output", str(tmp_path / "board")]) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "board").exists()


def test_an_unknown_metric_exits_2_with_a_suggestion(tmp_path, capsys):
    a = write_run(tmp_path / "a", {"abmil": binary_metrics(0.8, 0.6)})
    assert main(["compare", str(a), "--metric", "acuracy"]) == 2
    assert "has no metric 'acuracy'" in (err := capsys.readouterr().err) and "did you mean 'accuracy'?" in err
