"""Reading and checking a predictions file and a truth file for standalone scoring.

Standalone scoring (``wsi-pipeline score --predictions P.csv --truth T.csv``) takes files that
did not come out of this pipeline, so everything a user can get wrong is checked here, before
any number is computed, and reported as a :class:`~wsi_pipeline.errors.WSIPipelineError`
naming the file, the column and example ids: a missing column, empty or duplicate ids, ids in
one file but not the other, empty or non-numeric scores, probabilities outside [0, 1], a truth
with a single class, negative or missing survival times.

The result is one table in the layout of the pipeline's own predictions file
(:mod:`wsi_pipeline.scoring.predictions`): ``patient_id, model, fold`` (the file's fold
column when it has one, else 0), the task's target columns as named by the user, and the task's
prediction columns (binary ``score``, multiclass ``prob_<class>`` and ``predicted``, survival
``risk``, regression ``prediction``). With a group column (several rows per patient, e.g.
slides), ``patient_id`` is the group and the row id becomes ``slide_id``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.predictions import SLIDE_COLUMN, by_task

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: The tasks standalone scoring knows.
STANDALONE_TASKS = ("binary", "multiclass", "survival", "regression")
#: Names the split column may hold, and what they mean.
VALIDATION_VALUES = frozenset({"validation", "val"})
TEST_VALUES = frozenset({"test"})
#: Column of the model name in a predictions file (optional).
MODEL_COLUMN = "model"
#: A top-level key of metrics.json that is not a model.
RESERVED_MODEL_NAMES = frozenset({"comparisons"})

_EXAMPLES = 5


@dataclass(frozen=True)
class Columns:
    """Which columns of the two files hold what (the CLI's column options).

    Attributes
    ----------
    id
        Row identifier in both files (a patient, or a slide with ``group``).
    score
        Binary: probability of class 1; survival: risk (higher = earlier event); regression:
        the prediction. Unused by multiclass.
    label
        Truth: binary 0/1 label, multiclass class, regression target.
    time, event
        Truth of a survival task: follow-up time (>= 0) and 1 = event, 0 = censored.
    class_prefix
        Multiclass: the probability of class ``c`` is column ``<class_prefix><c>``.
    group
        Optional: the patient of each row (in either file), the bootstrap's resampling unit.
    split
        Optional predictions column: ``validation`` rows fix the threshold, ``test`` rows are scored.
    fold
        Optional predictions column: the cross-validation fold of each row (integers >= 0);
        every metric is then also given per fold, with its own bootstrap.
    subgroups
        Columns (of either file) to break the headline metrics down by; ``site`` is used
        whenever either file has it.
    """

    id: str = "patient_id"
    score: str = "score"
    label: str = "label"
    time: str = "time"
    event: str = "event"
    class_prefix: str = "prob_"
    group: str | None = None
    split: str = "split"
    fold: str = "fold"
    subgroups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoringInputs:
    """Checked inputs of standalone scoring.

    Attributes
    ----------
    table
        Test rows in the pipeline's predictions layout (see the module docstring), sorted by model and id.
    validation
        Validation rows in the same layout (empty without a split column).
    task
        The task, built from the column options (a multiclass task bound to the truth's classes).
    models
        Model names, sorted.
    grouped
        Whether rows are grouped into patients (a group column was given).
    predictions_path, truth_path
        The files read.
    subgroups
        The ``--subgroup-column`` columns, in ``table`` (as is ``site`` when a file has it).
    """

    table: pd.DataFrame
    validation: pd.DataFrame
    task: Task
    models: list[str]
    grouped: bool
    predictions_path: Path
    truth_path: Path
    subgroups: tuple[str, ...] = ()


def _listing(values: Iterable[object]) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:_EXAMPLES]))
    return shown + (f" and {len(values) - _EXAMPLES} more" if len(values) > _EXAMPLES else "")


def read_table(path: str | os.PathLike[str], what: str, text_columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV file, identifiers as text, with errors that name the file.

    Parameters
    ----------
    path
        The CSV file.
    what
        What the file is (``predictions``, ``truth``), for messages.
    text_columns
        Columns read as text (ids, model, group), so ``"007"`` stays ``"007"``.

    Returns
    -------
    pandas.DataFrame
        The table, with at least one row.
    """
    path = Path(path)
    if not path.is_file():
        raise WSIPipelineError(f"{what} file not found", where=str(path), fix=f"pass the path of an existing {what} CSV file")
    try:
        table = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str))
    except pd.errors.EmptyDataError:
        raise WSIPipelineError(f"{what} file is empty", where=str(path), fix="write a header row and one row per patient") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise WSIPipelineError(f"{what} file is not a readable CSV ({exc})", where=str(path),
                               fix="write a comma-separated UTF-8 file with a header row") from None
    if table.empty:
        raise WSIPipelineError(f"{what} file has a header but no rows", where=str(path), fix="write one row per patient")
    return table


def require(table: pd.DataFrame, column: str, path: Path, meaning: str, option: str) -> None:
    """Raise naming the file, the column and the option that renames it when ``column`` is absent."""
    if column not in table.columns:
        raise WSIPipelineError(
            f"no column '{column}' ({meaning}); columns present: {', '.join(map(str, table.columns))}",
            where=str(path),
            fix=f"add a '{column}' column, or pass {option} with the name of the column that holds {meaning}",
        )


def _ids(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    ids = table[column]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise WSIPipelineError(
            f"column '{column}' is empty in {int(empty.sum())} row(s) (rows {_listing(np.flatnonzero(empty.to_numpy()) + 2)} of the file)",
            where=str(path), fix=f"give every row an identifier in '{column}'",
        )
    return ids.astype(str).str.strip()


def _duplicates(table: pd.DataFrame, keys: list[str], path: Path, id_column: str) -> None:
    dup = table.duplicated(keys, keep=False)
    if dup.any():
        examples = table.loc[dup, keys].drop_duplicates()
        shown = _listing(" / ".join(map(str, row)) for row in examples.itertuples(index=False))
        per_model = " per model" if len(keys) > 1 else ""
        raise WSIPipelineError(
            f"{len(examples)} id(s) appear more than once{per_model} in column '{id_column}', e.g. {shown}",
            where=str(path),
            fix="write one row per id (and model); for several slides per patient, give each slide its own id and "
            "name the patient column with --group-column",
        )


def _numeric(table: pd.DataFrame, column: str, path: Path, meaning: str, ids: pd.Series) -> np.ndarray:
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    missing = raw.isna().to_numpy()
    if missing.any():
        raise WSIPipelineError(
            f"column '{column}' ({meaning}) is empty or NaN for {int(missing.sum())} row(s), e.g. ids {_listing(ids[missing])}",
            where=str(path), fix=f"write a number in '{column}' for every row, or drop those rows from both files",
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise WSIPipelineError(
            f"column '{column}' ({meaning}) is not a finite number for {int(bad.sum())} row(s), e.g. "
            f"{_listing(f'{i}: {v!r}' for i, v in zip(ids[bad], raw[bad], strict=True))}",
            where=str(path), fix=f"write finite numbers in '{column}'",
        )
    return values


def _probabilities(values: np.ndarray, column: str, path: Path, ids: pd.Series) -> None:
    bad = (values < 0) | (values > 1)
    if bad.any():
        raise WSIPipelineError(
            f"column '{column}' holds {int(bad.sum())} value(s) outside [0, 1], e.g. "
            f"{_listing(f'{i}: {v:g}' for i, v in zip(ids[bad], values[bad], strict=True))}; it must be a probability",
            where=str(path), fix="write probabilities (apply a sigmoid or softmax to logits), or pick another column with --score-column",
        )


def build_task(task_name: str, columns: Columns) -> Task:
    """The task scored, with the target columns named as in the truth file."""
    from wsi_pipeline.mil.tasks.registry import build_task as build

    if task_name not in STANDALONE_TASKS:
        raise WSIPipelineError(f"unknown task '{task_name}'", where="--task", fix=f"use one of {', '.join(STANDALONE_TASKS)}")
    if task_name == "survival":
        if columns.time == columns.event:
            raise WSIPipelineError(f"--time-column and --event-column are both '{columns.time}'", where="--event-column",
                                   fix="name the follow-up time and the event indicator columns")
        return build({"type": "survival", "time_column": columns.time, "event_column": columns.event})
    if task_name == "regression":
        return build({"type": "regression", "target_column": columns.label})
    return build({"type": task_name, "label_column": columns.label})


def load_inputs(
    predictions_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    task_name: str,
    columns: Columns = Columns(),
) -> ScoringInputs:
    """Read both files, check them (see the module docstring) and join them into one table.

    Parameters
    ----------
    predictions_path
        One row per id (and model, with a ``model`` column; without one, the model is named
        after the file's stem), the score column(s), optionally the group and split columns.
    truth_path
        One row per id with the target column(s), optionally the group column.
    task_name
        ``binary``, ``multiclass``, ``survival`` or ``regression``.
    columns
        Column names.

    Returns
    -------
    ScoringInputs
        The checked, joined table.

    Raises
    ------
    WSIPipelineError
        For every problem listed in the module docstring.
    """
    task = build_task(task_name, columns)
    p_path, t_path = Path(predictions_path), Path(truth_path)
    text = [columns.id, MODEL_COLUMN, *([columns.group] if columns.group else []), columns.split, "site", *columns.subgroups]
    predictions = read_table(p_path, "predictions", text)
    truth = read_table(t_path, "truth", text)

    require(predictions, columns.id, p_path, "the row identifier", "--id-column")
    require(truth, columns.id, t_path, "the row identifier", "--id-column")
    target_columns = task.target_columns
    for name in target_columns:
        option = {columns.time: "--time-column", columns.event: "--event-column"}.get(name, "--label-column")
        require(truth, name, t_path, f"the {task_name} task's target", option)

    predictions = predictions.copy()
    predictions[columns.id] = _ids(predictions, columns.id, p_path)
    truth = truth.copy()
    truth[columns.id] = _ids(truth, columns.id, t_path)
    if MODEL_COLUMN in predictions.columns:
        predictions[MODEL_COLUMN] = _ids(predictions, MODEL_COLUMN, p_path)
    else:
        predictions[MODEL_COLUMN] = p_path.stem
    reserved = sorted(set(predictions[MODEL_COLUMN]) & RESERVED_MODEL_NAMES)
    if reserved:
        raise WSIPipelineError(f"model name '{reserved[0]}' is reserved (metrics.json lists the model comparisons under it)",
                               where=str(p_path), fix="rename that model in the 'model' column")
    _duplicates(truth, [columns.id], t_path, columns.id)
    _duplicates(predictions, [MODEL_COLUMN, columns.id], p_path, columns.id)

    # Ids in one file and not the other: a misaligned join would silently score the wrong patients.
    known = set(truth[columns.id])
    unknown = sorted(set(predictions[columns.id]) - known)
    if unknown:
        raise WSIPipelineError(
            f"{len(unknown)} id(s) in the predictions are not in the truth file {t_path}, e.g. {_listing(unknown)}",
            where=str(p_path), fix=f"add their truth to {t_path.name}, or drop them from the predictions (check --id-column)",
        )
    for model, rows in predictions.groupby(MODEL_COLUMN, sort=True):
        absent = sorted(known - set(rows[columns.id]))
        if absent:
            raise WSIPipelineError(
                f"{len(absent)} id(s) of the truth file have no prediction from model '{model}', e.g. {_listing(absent)}",
                where=str(p_path), fix=f"predict every id of {t_path.name}, or drop the ids that were not predicted from the truth file",
            )

    group = _group_column(predictions, truth, columns, p_path, t_path)
    split = _split(predictions, columns, p_path)
    table = _join(predictions, truth, task, task_name, columns, p_path, t_path, group)
    is_validation = split.isin(VALIDATION_VALUES).to_numpy()
    test, validation = table[~is_validation], table[is_validation]
    if test.empty:
        raise WSIPipelineError(f"every row of column '{columns.split}' is a validation row: nothing is left to score",
                               where=str(p_path), fix="mark the rows to score 'test'")
    _check_targets(truth[truth[columns.id].isin(set(test["_id"]))], task, task_name, columns, t_path)
    if task_name == "multiclass":
        labels = pd.DataFrame({"patient_id": truth[columns.id].to_numpy(), columns.label: truth[columns.label].to_numpy()})
        task = by_task(str(t_path), lambda: task.bind(labels))
        table = _multiclass_predictions(table, task, columns, p_path)
        test, validation = table[~is_validation], table[is_validation]
    by_task(str(p_path), lambda: task.check_predictions(test))
    order = ["model", "patient_id", *([SLIDE_COLUMN] if group is not None else [])]
    clean = [frame.drop(columns="_id").sort_values(order, kind="stable").reset_index(drop=True) for frame in (test, validation)]
    return ScoringInputs(clean[0], clean[1], task, sorted(test["model"].unique()), group is not None, p_path, t_path,
                         tuple(columns.subgroups))


def _group_column(predictions: pd.DataFrame, truth: pd.DataFrame, columns: Columns, p_path: Path, t_path: Path) -> pd.Series | None:
    """The patient of each prediction row, from the predictions or else the truth file."""
    if not columns.group:
        return None
    if columns.group in predictions.columns:
        groups = _ids(predictions, columns.group, p_path)
        # One patient per id, across models.
        n = pd.DataFrame({"id": predictions[columns.id], "g": groups}).groupby("id")["g"].nunique()
        if (n > 1).any():
            raise WSIPipelineError(f"column '{columns.group}' gives some ids several patients, e.g. {_listing(n.index[n > 1])}",
                                   where=str(p_path), fix="give each id one patient in every row")
        return groups
    require(truth, columns.group, t_path, "the patient of each row (the resampling unit)", "--group-column")
    by_id = dict(zip(truth[columns.id], _ids(truth, columns.group, t_path), strict=True))
    return predictions[columns.id].map(by_id)


def _split(predictions: pd.DataFrame, columns: Columns, p_path: Path) -> pd.Series:
    if columns.split not in predictions.columns:
        return pd.Series(["test"] * len(predictions), index=predictions.index)
    values = predictions[columns.split].astype(str).str.strip().str.lower()
    bad = ~values.isin(VALIDATION_VALUES | TEST_VALUES)
    if bad.any():
        raise WSIPipelineError(
            f"column '{columns.split}' holds {_listing(sorted(set(predictions.loc[bad, columns.split].astype(str))))}; "
            "it must say which rows are 'validation' and which 'test'",
            where=str(p_path), fix="write 'validation' (fixes the decision threshold) or 'test' (scored) in every row",
        )
    return values


def _join(predictions: pd.DataFrame, truth: pd.DataFrame, task: Task, task_name: str, columns: Columns,
          p_path: Path, t_path: Path, group: pd.Series | None) -> pd.DataFrame:
    ids = predictions[columns.id]
    table = pd.DataFrame({"_id": ids.to_numpy(), "model": predictions[MODEL_COLUMN].to_numpy(),
                          "fold": _folds(predictions, columns.fold, p_path, ids)})
    if group is None:
        table["patient_id"] = ids.to_numpy()
    else:
        table["patient_id"] = group.to_numpy()
        table[SLIDE_COLUMN] = ids.to_numpy()
    targets = truth.set_index(columns.id)
    for name in task.target_columns:
        table[name] = targets.loc[ids, name].to_numpy()
    for name in _breakdown_columns(predictions, truth, columns, p_path, t_path):
        if name not in table.columns:
            # From the predictions when they have it (e.g. a site per model run), else the truth's value of the id.
            table[name] = predictions[name].to_numpy() if name in predictions.columns else targets.loc[ids, name].to_numpy()
    if task_name == "multiclass":
        prefixed = [c for c in predictions.columns if str(c).startswith(columns.class_prefix)]
        for name in prefixed:
            table[name] = predictions[name].to_numpy()
        if "predicted" in predictions.columns:
            table["predicted"] = predictions["predicted"].to_numpy()
        return table
    meaning = {"binary": "the predicted probability of label 1", "survival": "the predicted risk (higher = earlier event)",
               "regression": "the predicted value"}[task_name]
    require(predictions, columns.score, p_path, meaning, "--score-column")
    score = _numeric(predictions, columns.score, p_path, meaning, ids)
    if task_name == "binary":
        _probabilities(score, columns.score, p_path, ids)
    table[task.prediction_columns[0]] = score
    return table


def _folds(predictions: pd.DataFrame, column: str, path: Path, ids: pd.Series) -> np.ndarray:
    """The fold of each row: the fold column as integers >= 0, or 0 for every row without one."""
    if column not in predictions.columns:
        return np.zeros(len(predictions), dtype=np.int64)
    values = _numeric(predictions, column, path, "the cross-validation fold", ids)
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        raise WSIPipelineError(
            f"column '{column}' holds {int(bad.sum())} value(s) that are not integers >= 0, e.g. "
            f"{_listing(f'{i}: {v:g}' for i, v in zip(ids[bad], values[bad], strict=True))}",
            where=str(path), fix=f"write folds as 0, 1, 2, ... in '{column}'",
        )
    return values.astype(np.int64)


def _breakdown_columns(predictions: pd.DataFrame, truth: pd.DataFrame, columns: Columns, p_path: Path, t_path: Path) -> list[str]:
    """``site`` when either file has it, then the ``--subgroup-column`` columns (each must be in one of the files)."""
    for name in columns.subgroups:
        if name not in predictions.columns and name not in truth.columns:
            raise WSIPipelineError(
                f"subgroup column '{name}' is in neither the predictions file nor the truth file {t_path}",
                where=str(p_path), fix=f"add a '{name}' column to one of the files, or drop --subgroup-column {name}",
            )
    site = ["site"] if "site" in predictions.columns or "site" in truth.columns else []
    return list(dict.fromkeys([*site, *columns.subgroups]))


def _check_targets(truth: pd.DataFrame, task: Task, task_name: str, columns: Columns, t_path: Path) -> None:
    """The targets of the scored ids: valid for the task, and more than one class where needed."""
    # Named 'patient_id' so that the task's messages name the offending ids.
    frame = pd.DataFrame({"patient_id": truth[columns.id].to_numpy(), **{c: truth[c].to_numpy() for c in task.target_columns}})
    encoded = by_task(str(t_path), lambda: task.targets(frame) if task_name != "multiclass" else None)
    if task_name == "binary":
        classes = np.unique(encoded)
        if len(classes) < 2:
            raise WSIPipelineError(
                f"every scored id has label {int(classes[0])} in column '{task.target_columns[0]}': AUC, sensitivity and "
                "specificity need both classes",
                where=str(t_path), fix="score a set of patients that holds both classes (check --label-column)",
            )
    if task_name == "multiclass":
        labels = truth[task.target_columns[0]]
        if labels.isna().any():
            raise WSIPipelineError(f"column '{task.target_columns[0]}' is empty for {int(labels.isna().sum())} scored id(s)",
                                   where=str(t_path), fix="give every scored id its class")
        if labels.astype(str).nunique() < 2:
            raise WSIPipelineError(f"every scored id has the class '{labels.iloc[0]}': a multiclass task needs at least two",
                                   where=str(t_path), fix="score a set of patients that holds several classes (check --label-column)")


def _multiclass_predictions(table: pd.DataFrame, task: Task, columns: Columns, p_path: Path) -> pd.DataFrame:
    """``prob_<class>`` for every class (renamed from the prefix), and ``predicted`` (the most probable class when absent)."""
    classes = list(task.classes)
    for c in classes:
        name = f"{columns.class_prefix}{c}"
        if name not in table.columns:
            raise WSIPipelineError(
                f"no column '{name}' (the predicted probability of class '{c}'); a multiclass predictions file needs "
                f"one '{columns.class_prefix}<class>' column per class of the truth ({', '.join(classes)})",
                where=str(p_path), fix=f"add '{name}', or pass --class-prefix with the prefix of your probability columns",
            )
    probabilities = {}
    for c in classes:
        name = f"{columns.class_prefix}{c}"
        values = _numeric(table, name, p_path, f"the probability of class '{c}'", table["_id"])
        _probabilities(values, name, p_path, table["_id"])
        probabilities[f"prob_{c}"] = values
    out = table.drop(columns=[c for c in table.columns if str(c).startswith(columns.class_prefix) and c not in ("_id",)])
    for name, values in probabilities.items():
        out[name] = values
    if "predicted" not in out.columns:
        matrix = np.column_stack(list(probabilities.values()))
        out["predicted"] = np.asarray(classes, dtype=object)[matrix.argmax(axis=1)]
    else:
        out["predicted"] = out["predicted"].astype(str)
    return out


