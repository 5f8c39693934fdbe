"""A leaderboard of runs: every (run, model) with its headline metric and CI, and paired tests against the leader.

``wsi-pipeline compare RUN_A RUN_B ... --output DIR`` lands here. Each run folder holds what the
score stage wrote (``metrics.json``), the out-of-fold ``predictions.csv`` and ``run.json`` (the
task it was scored for). The runs must share a task type. The leaderboard ranks every (run,
model) by the task's headline metric (its first: AUC, macro AUC, C-index; lower first for an
error such as MAE) as ``metrics.json`` gives it, interval included.

Paired tests compare each entry with the leader on the patients both scored (the same
patients must be scored for the difference to mean anything): a paired bootstrap of the
difference in the headline metric -- one draw of patients applied to both, and to every
repeat of each, the metric averaged over repeats as in ``metrics.json`` -- and, for binary
tasks with one repeat and one row per patient, DeLong's test. Writes ``leaderboard.csv``,
``leaderboard.md``, the self-contained ``leaderboard.html`` and ``comparisons.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.binary import auc_weighted
from wsi_pipeline.scoring.bootstrap import patient_rows
from wsi_pipeline.scoring.delong import delong_test
from wsi_pipeline.scoring.document import (
    Document,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from wsi_pipeline.scoring.formatting import format_interval, format_p
from wsi_pipeline.scoring.layout import METRICS_FILE
from wsi_pipeline.scoring.predictions import (
    REPEAT_COLUMN,
    SLIDE_COLUMN,
    load_predictions,
    unit_columns,
)
from wsi_pipeline.scoring.resample import bootstrap_weighted, percentile_interval

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: Metrics where lower is better (the leaderboard sorts them ascending).
LOWER_IS_BETTER = frozenset({"mae", "rmse", "brier", "ece"})
PREDICTIONS_FILE = "predictions.csv"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class ScoredRun:
    """One run folder's scores.

    Attributes
    ----------
    name
        How the leaderboard names the run (its folder name, made unique).
    folder
        The run folder.
    metrics
        Its metrics.json: model -> metrics.
    task
        The task it was scored for.
    predictions
        Its validated predictions table, or None when the folder has none (no paired tests then).
    """

    name: str
    folder: Path
    metrics: dict[str, Any]
    task: Task
    predictions: pd.DataFrame | None


def _task_of(folder: Path) -> Task:
    from wsi_pipeline.mil.tasks.registry import build_task
    from wsi_pipeline.mil.tasks.settings import accepted_settings

    path = folder / RUN_FILE
    try:
        workflow = json.loads(path.read_text())["config"]["workflow"]
        settings = dict(workflow["task"])
    except (OSError, ValueError, KeyError, TypeError):
        raise WSIPipelineError("no readable run record (run.json with the workflow's task)", where=str(path),
                               fix="pass the output folder of a run that finished its score stage") from None
    # The scoring settings a task type takes (a binary task's threshold), as the run did.
    settings.update({k: v for k, v in workflow.get("scoring", {}).items() if k in accepted_settings(settings["type"])})
    return build_task(settings)


def load_run(folder: str | os.PathLike[str], name: str | None = None) -> ScoredRun:
    """Read a run folder's metrics, task and predictions.

    Raises
    ------
    WSIPipelineError
        When the folder or its metrics.json is missing or unreadable.
    """
    folder = Path(folder)
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file():
        raise WSIPipelineError("no metrics.json: this run was not scored", where=str(folder),
                               fix="pass a run's output folder after its score stage (wsi-pipeline score MANIFEST)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except ValueError as exc:
        raise WSIPipelineError(f"metrics.json is not valid JSON ({exc})", where=str(metrics_path), fix="score the run again") from None
    metrics = {m: v for m, v in metrics.items() if isinstance(v, dict)}  # a standalone file's 'comparisons' is a list
    task = _task_of(folder)
    predictions = None
    if (folder / PREDICTIONS_FILE).is_file():
        predictions = load_predictions(folder / PREDICTIONS_FILE, task=task.bind(pd.read_csv(folder / PREDICTIONS_FILE))
                                       if task.name == "multiclass" else task)
    return ScoredRun(name or folder.name, folder, metrics, task, predictions)


def headline(task: Task) -> str:
    """The metric a leaderboard ranks by: the task's first."""
    return task.metric_names[0]


def _paired_difference(a: pd.DataFrame, b: pd.DataFrame, task: Task, metric: str, *, n_resamples: int, level: float,
                       seed: int) -> dict[str, Any] | None:
    """Paired bootstrap (and DeLong, when it applies) of metric(a) - metric(b) on the units both scored."""
    units = unit_columns(a)
    if units != unit_columns(b):
        return None
    keys = [tuple(k) for k in a.loc[a[REPEAT_COLUMN] == a[REPEAT_COLUMN].min(), units].itertuples(index=False)]
    other = {tuple(k) for k in b.loc[b[REPEAT_COLUMN] == b[REPEAT_COLUMN].min(), units].itertuples(index=False)}
    common = sorted(set(keys) & other)
    if len(common) < 4:
        return None

    def repeats(frame: pd.DataFrame) -> list[pd.DataFrame]:
        out = []
        for _, rows in frame.groupby(REPEAT_COLUMN, sort=True):
            rows = rows.set_index(units)
            out.append(rows.loc[pd.MultiIndex.from_tuples(common) if len(units) > 1 else [c[0] for c in common]])
        return out

    ra, rb = repeats(a), repeats(b)
    groups = np.array([c[0] for c in common]) if SLIDE_COLUMN in units else None
    n_patients = len({c[0] for c in common})
    result: dict[str, Any] = {"n_patients": n_patients, "n_repeats": [len(ra), len(rb)]}
    if metric == "auc" and task.name == "binary":
        label = task.target_columns[0]
        y = ra[0][label].to_numpy(dtype=np.float64)
        sa = [r["score"].to_numpy(dtype=np.float64) for r in ra]
        sb = [r["score"].to_numpy(dtype=np.float64) for r in rb]

        def difference(w: np.ndarray) -> dict[str, np.ndarray]:
            return {"difference": np.mean([auc_weighted(y, s, w) for s in sa], axis=0)
                    - np.mean([auc_weighted(y, s, w) for s in sb], axis=0)}

        draws = bootstrap_weighted(difference, len(y), groups=groups, n_resamples=n_resamples, seed=seed)
        values = draws.values["difference"]
        interval = draws.interval("difference", level)
        if len(ra) == len(rb) == 1 and groups is None and min(y.sum(), len(y) - y.sum()) >= 2:
            test = delong_test(y, sa[0], sb[0], level=level)
            result["delong_p"] = _number(test.p_value)
    else:
        # Any task: its metric on a resample of both tables (the same patients), averaged over each one's repeats.
        columns = [*task.target_columns, *task.prediction_columns]

        def side(tables: list[pd.DataFrame], rows: np.ndarray) -> float:
            return float(np.mean([task.metrics({c: t[c].to_numpy()[rows] for c in columns})[metric] for t in tables]))

        members = patient_rows(groups, len(common))
        everyone = np.arange(len(common))
        full = side(ra, everyone) - side(rb, everyone)
        rng = np.random.default_rng(seed)
        drawn = rng.integers(0, len(members), size=(n_resamples, len(members)))
        values = np.array([side(ra, rows) - side(rb, rows) for rows in (np.concatenate([members[i] for i in d]) for d in drawn)])
        n_undefined = int((~np.isfinite(values)).sum())
        values = values[np.isfinite(values)]
        interval = percentile_interval(full, values, n_undefined, level)
    result["difference"] = interval.as_dict()
    # Two-sided, counting the observed data as one resample (never 0).
    extreme = min(np.count_nonzero(values <= 0), np.count_nonzero(values >= 0))
    result["bootstrap_p"] = min(1.0, 2.0 * (1 + extreme) / (1 + len(values))) if len(values) else None
    return result


def _number(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def compare_runs(
    folders: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    n_resamples: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank the models of several runs and test each against the leader; write the leaderboard.

    Parameters
    ----------
    folders
        Run output folders (at least one).
    out_dir
        Where ``leaderboard.csv``, ``leaderboard.md``, ``leaderboard.html`` and ``comparisons.json`` go.
    n_resamples, ci_level, seed
        The paired bootstrap.

    Returns
    -------
    pandas.DataFrame
        The leaderboard, best first.

    Raises
    ------
    WSIPipelineError
        For a missing or unscored run folder, or runs of different task types.
    """
    names = [Path(f).name or str(f) for f in folders]
    unique = [n if names.count(n) == 1 else f"{n}#{names[:i].count(n) + 1}" for i, n in enumerate(names)]
    runs = [load_run(f, name) for f, name in zip(folders, unique, strict=True)]
    kinds = {run.task.name for run in runs}
    if len(kinds) > 1:
        raise WSIPipelineError(f"the runs were scored for different tasks ({', '.join(sorted(kinds))})", where="wsi-pipeline compare",
                               fix="compare runs of one task type")
    task = runs[0].task
    metric = headline(task)
    rows = []
    for run in runs:
        for model, values in run.metrics.items():
            entry = values.get(metric) or {}
            rows.append({"run": run.name, "model": model, "metric": metric, "value": entry.get("value"),
                         "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high"), "n_patients": values.get("n_patients")})
    board = pd.DataFrame(rows)
    board["_key"] = board["value"].astype(float) * (1 if metric in LOWER_IS_BETTER else -1)
    board = board.sort_values("_key", na_position="last", kind="stable").drop(columns="_key").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))

    comparisons = []
    leader = board.iloc[0]
    by_name = {run.name: run for run in runs}
    lead_run = by_name[leader["run"]]
    for _, row in board.iloc[1:].iterrows():
        run = by_name[row["run"]]
        test = None
        if lead_run.predictions is not None and run.predictions is not None:
            a = lead_run.predictions[lead_run.predictions["model"] == leader["model"]]
            b = run.predictions[run.predictions["model"] == row["model"]]
            test = _paired_difference(a, b, task, metric, n_resamples=n_resamples, level=ci_level, seed=seed)
        comparisons.append({"leader": f"{leader['run']}/{leader['model']}", "entry": f"{row['run']}/{row['model']}", "metric": metric,
                            **(test or {"difference": None})})
    tests = {c["entry"]: c for c in comparisons}
    board["p_vs_leader"] = [None if i == 0 else (tests.get(f"{r}/{m}") or {}).get("bootstrap_p")
                            for i, (r, m) in enumerate(zip(board["run"], board["model"], strict=True))]
    _write(board, comparisons, Path(out_dir), task, metric, ci_level, n_resamples, seed)
    return board


def _write(board: pd.DataFrame, comparisons: list[dict[str, Any]], out: Path, task: Task, metric: str, level: float,
           n_resamples: int, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.csv", board.to_csv(index=False))
    label = task.metric_labels.get(metric, metric)
    ci = f"{level * 100:g}% CI"
    rows = []
    for _, r in board.iterrows():
        test = next((c for c in comparisons if c["entry"] == f"{r['run']}/{r['model']}"), None)
        diff = format_interval(test["difference"]) if test and test.get("difference") else ("(leader)" if r["rank"] == 1 else "n/a")
        rows.append([str(r["rank"]), str(r["run"]), str(r["model"]),
                     format_interval({"value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}),
                     diff, format_p((test or {}).get("bootstrap_p")), format_p((test or {}).get("delong_p")),
                     str(r["n_patients"])])
    doc = Document(f"Leaderboard: {label}").add(
        Table(["Rank", "Run", "Model", f"{label} [{ci}]", f"Difference from the leader [{ci}]", "Paired bootstrap p", "DeLong p",
               "Patients"], rows),
        Heading("Method"),
        Paragraph(f"Task: {task.describe()}. Each value and interval is the run's own metrics.json. Each entry is compared with "
                  f"the leader on the patients both scored: a paired bootstrap of the difference ({n_resamples} resamples, seed "
                  f"{seed}; one draw of patients for both runs and every repeat; the metric averaged over repeats), with its "
                  "two-sided p-value (counting the observed data as one resample); DeLong's test for binary runs "
                  "with one repeat and one row per patient. Lower is better for " + ", ".join(sorted(LOWER_IS_BETTER)) + "."),
    )
    atomic_write_text(out / "leaderboard.md", to_markdown(doc))
    atomic_write_text(out / "leaderboard.html", to_html(doc))
    atomic_write_text(out / "comparisons.json", json.dumps(comparisons, indent=2, allow_nan=False) + "\n")
