"""A leaderboard of runs: every (run, model) with its headline metric and CI, and paired tests against the leader.

``wsi-pipeline compare RUN_A RUN_B ... [--output DIR] [--metric NAME]`` lands here. Each run
folder is a finished run: what the score stage wrote (``metrics.json``), the out-of-fold
``predictions.csv`` and ``run.json`` (the task it was scored for, when it finished). The runs
must share a task type. The leaderboard ranks every (run, model) by the task's headline metric
(its first: AUC, macro AUC, C-index; lower first for an error such as MAE), or ``--metric``, as
``metrics.json`` gives it, interval included, beside the task's other headline metrics, the
encoder, the number of patients and when the run finished.

Each entry is tested against the leader on the patients both scored
(:mod:`wsi_pipeline.scoring.paired`: DeLong for a binary AUC with one repeat and one row per
patient, a paired bootstrap of the metric's difference otherwise; refused, with the reason, when
the runs' truth differs for a shared patient). A run sharing no patient with the leader's is an
error. Writes ``leaderboard.csv``, ``leaderboard.md``, the self-contained ``leaderboard.html``
and ``comparisons.json``.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.binary import BINARY_LABELS
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
from wsi_pipeline.scoring.paired import PairedResult, paired_metric_test
from wsi_pipeline.scoring.predictions import load_predictions

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
        Its validated predictions table.
    finished
        When the run finished (run.json's ``finished``, else ``started``; empty when neither).
    """

    name: str
    folder: Path
    metrics: dict[str, Any]
    task: Task
    predictions: pd.DataFrame
    finished: str = ""

    def encoder(self, model: str) -> str:
        """The features a model was trained on: predictions.csv's ``encoder`` column (empty without one)."""
        if "encoder" not in self.predictions.columns:
            return ""
        return ", ".join(sorted(self.predictions.loc[self.predictions["model"] == model, "encoder"].dropna().astype(str).unique()))


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
    """Read a finished run folder's metrics, task, predictions and finishing time.

    Raises
    ------
    WSIPipelineError
        Naming the folder, when it is not a finished run (no predictions.csv, metrics.json or
        run.json) or one of them is unreadable.
    """
    folder = Path(folder)
    missing = [name for name in (PREDICTIONS_FILE, METRICS_FILE, RUN_FILE) if not (folder / name).is_file()]
    if missing:
        what = "no such folder" if not folder.is_dir() else f"no {' and no '.join(missing)}"
        raise WSIPipelineError(f"not a finished run: {what}", where=str(folder),
                               fix="pass the output folder of a run whose score stage finished (it holds predictions.csv, "
                                   "metrics.json and run.json); finish a run with `wsi-pipeline score MANIFEST`")
    metrics_path = folder / METRICS_FILE
    try:
        metrics = json.loads(metrics_path.read_text())
        record = json.loads((folder / RUN_FILE).read_text())
    except ValueError as exc:
        raise WSIPipelineError(f"not valid JSON ({exc})", where=str(folder), fix="score the run again") from None
    metrics = {m: v for m, v in metrics.items() if isinstance(v, dict)}  # a standalone file's 'comparisons' is a list
    task = _task_of(folder)
    predictions = load_predictions(folder / PREDICTIONS_FILE, task=task.bind(pd.read_csv(folder / PREDICTIONS_FILE))
                                   if task.name == "multiclass" else task)
    finished = str(record.get("finished") or record.get("started") or "") if isinstance(record, dict) else ""
    return ScoredRun(name or folder.name, folder, metrics, task, predictions, finished)


def headline(task: Task) -> str:
    """The metric a leaderboard ranks by: the task's first."""
    return task.metric_names[0]


def compare_runs(
    folders: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    metric: str | None = None,
    n_resamples: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank the models of several runs and test each against the leader; write the leaderboard.

    Parameters
    ----------
    folders
        Finished run output folders (at least one), all of one task type.
    out_dir
        Where ``leaderboard.csv``, ``leaderboard.md``, ``leaderboard.html`` and ``comparisons.json``
        go; None writes nothing.
    metric
        The metric to rank and test by; default the task's headline (:func:`headline`).
    n_resamples, ci_level, seed
        The paired bootstrap, and the level of the differences' intervals.

    Returns
    -------
    pandas.DataFrame
        The leaderboard, best first: ``rank, run, model, encoder, finished, n_patients``, the
        ranking ``metric`` with ``value, ci_low, ci_high`` (the run's metrics.json), the task's
        other headline metrics (``<name>``, ``<name>_ci_low``, ``<name>_ci_high``), then the
        test against the leader: ``shared_patients``, ``difference`` (leader - entry, on the
        shared patients) with ``difference_ci_low/high``, ``p_vs_leader`` and ``test`` (the
        test's name, or why the entry was not paired).

    Raises
    ------
    WSIPipelineError
        Naming the folder: not a finished run, a task type other than the first run's, no
        patient in common with the leader's run; or an unknown ``metric``.
    """
    names = [Path(f).name or str(f) for f in folders]
    unique = [n if names.count(n) == 1 else f"{n}#{names[:i].count(n) + 1}" for i, n in enumerate(names)]
    runs = [load_run(f, name) for f, name in zip(folders, unique, strict=True)]
    first = runs[0]
    for run in runs[1:]:
        if run.task.name != first.task.name:
            raise WSIPipelineError(
                f"is a {run.task.name} run but {first.folder} is a {first.task.name} run: the runs were scored for different tasks",
                where=str(run.folder), fix="compare runs of one task type (their workflows' task.type)")
    task = first.task
    metric = metric or headline(task)
    _check_metric(metric, runs)
    others = [name for name in task.metric_names if name != metric]
    rows = []
    for run in runs:
        for model, values in run.metrics.items():
            entry = values.get(metric) or {}
            row = {"run": run.name, "model": model, "encoder": run.encoder(model), "finished": run.finished,
                   "n_patients": values.get("n_patients"), "metric": metric, "value": entry.get("value"),
                   "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high")}
            for name in others:
                other = values.get(name) if isinstance(values.get(name), dict) else {}
                row |= {name: other.get("value"), f"{name}_ci_low": other.get("ci_low"), f"{name}_ci_high": other.get("ci_high")}
            rows.append(row)
    board = pd.DataFrame(rows)
    board["_key"] = pd.to_numeric(board["value"], errors="coerce") * (1 if metric in LOWER_IS_BETTER else -1)
    board = board.sort_values("_key", na_position="last", kind="stable").drop(columns="_key").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))

    leader = board.iloc[0]
    by_name = {run.name: run for run in runs}
    lead_run = by_name[leader["run"]]
    _check_shared_patients(lead_run, runs)
    lead_rows = lead_run.predictions[lead_run.predictions["model"] == leader["model"]]
    comparisons, results = [], [PairedResult(int(lead_rows["patient_id"].nunique()), refused="the leader")]
    for _, row in board.iloc[1:].iterrows():
        run = by_name[row["run"]]
        rows_b = run.predictions[run.predictions["model"] == row["model"]]
        # leader - entry: positive when the leader is better on a higher-is-better metric.
        result = paired_metric_test(lead_rows, rows_b, lead_run.task, run.task, metric,
                                    n_resamples=n_resamples, level=ci_level, seed=seed)
        results.append(result)
        comparisons.append({"leader": f"{leader['run']}/{leader['model']}", "entry": f"{row['run']}/{row['model']}",
                            "metric": metric, **result.as_dict()})
    difference = [r.difference or {} for r in results]
    board["shared_patients"] = [r.n_patients for r in results]
    board["difference"] = [d.get("value") for d in difference]
    board["difference_ci_low"] = [d.get("ci_low") for d in difference]
    board["difference_ci_high"] = [d.get("ci_high") for d in difference]
    board["p_vs_leader"] = [r.p_value for r in results]
    board["test"] = [r.test or r.refused for r in results]
    if out_dir is not None:
        _write(board, comparisons, Path(out_dir), task, metric, others, ci_level, n_resamples, seed)
    return board


def _check_metric(metric: str, runs: Sequence[ScoredRun]) -> None:
    """Every run's metrics.json has ``metric`` as ``{"value", ...}`` for some model, else an error with the choices."""
    for run in runs:
        known = sorted({name for values in run.metrics.values() for name, v in values.items() if isinstance(v, dict) and "value" in v})
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise WSIPipelineError(f"metrics.json has no metric '{metric}'", where=str(run.folder),
                                   fix=f"{hint}rank by one of {', '.join(known)} (--metric)")


def _check_shared_patients(lead: ScoredRun, runs: Sequence[ScoredRun]) -> None:
    """A run that shares no patient with the leader's cannot be tested against it: an error, not a silent blank."""
    patients = set(lead.predictions["patient_id"])
    for run in runs:
        if run is not lead and not patients & set(run.predictions["patient_id"]):
            raise WSIPipelineError(
                f"shares no patient with {lead.folder} (the leader's run): there is nothing to pair", where=str(run.folder),
                fix="compare runs scored on the same cohort (predictions.csv's patient_id values must overlap)")


def _write(board: pd.DataFrame, comparisons: list[dict[str, Any]], out: Path, task: Task, metric: str, others: Sequence[str],
           level: float, n_resamples: int, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.csv", board.to_csv(index=False))
    label = _label(task, metric)
    ci = f"{level * 100:g}% CI"
    rows = []
    for _, r in board.iterrows():
        tested = r["rank"] > 1 and r["p_vs_leader"] is not None and not pd.isna(r["p_vs_leader"])
        diff = {"value": r["difference"], "ci_low": r["difference_ci_low"], "ci_high": r["difference_ci_high"]}
        rows.append([str(r["rank"]), str(r["run"]), str(r["model"]), str(r["encoder"]), _interval(r, metric),
                     *(_interval(r, name) for name in others), str(r["n_patients"]), str(r["finished"]),
                     "" if r["rank"] == 1 else str(r["shared_patients"]),
                     format_interval(diff) if tested else "", format_p(r["p_vs_leader"]) if tested else "",
                     "(leader)" if r["rank"] == 1 else str(r["test"])])
    header = ["Rank", "Run", "Model", "Encoder", f"{label} [{ci}]", *(_label(task, name) for name in others), "Patients",
              "Finished", "Shared with leader", f"Difference from the leader [{ci}]", "p", "Test"]
    lower = "lower" if metric in LOWER_IS_BETTER else "higher"
    doc = Document(f"Leaderboard: {label}").add(
        Table(header, rows),
        Heading("Method"),
        Paragraph(f"Task: {task.describe()}. Ranked by {label} ({lower} is better); each value and interval is the run's own "
                  "metrics.json, at the run's scoring.ci_level. Each entry is compared with the leader on the patients both "
                  "scored (in every repeat; refused when the two runs' truth differs for any of them), as leader minus entry: "
                  "DeLong's test for a binary AUC with one repeat and one row per patient on both sides, otherwise a paired "
                  f"bootstrap of the difference ({n_resamples} resamples, seed {seed}; one draw of patients for both runs and "
                  "every repeat; the metric averaged over repeats) with its two-sided p-value (counting the observed data as "
                  "one resample). The test column names the one used; comparisons.json has both p-values."),
    )
    atomic_write_text(out / "leaderboard.md", to_markdown(doc))
    atomic_write_text(out / "leaderboard.html", to_html(doc))
    atomic_write_text(out / "comparisons.json", json.dumps(comparisons, indent=2, allow_nan=False) + "\n")


def _label(task: Task, metric: str) -> str:
    return task.metric_labels.get(metric) or (BINARY_LABELS.get(metric, metric) if task.name == "binary" else metric)


def _interval(row: pd.Series, name: str) -> str:
    keys = ("value", "ci_low", "ci_high") if name == row["metric"] else (name, f"{name}_ci_low", f"{name}_ci_high")
    values = [None if pd.isna(row[k]) else float(row[k]) for k in keys]
    return format_interval(dict(zip(("value", "ci_low", "ci_high"), values, strict=True)))
