"""The predictions table: its columns, validation with actionable errors, and loading.

One row per patient, model and repeat, written by the train stage (out-of-fold predictions)
or by hand. Its columns are ``patient_id, model, fold`` (and ``repeat``, 0 when absent), the
task's target columns and its prediction columns (a binary task: ``label, score``), and
optionally the follow-up columns ``pfs_months, event``. A table with a ``slide_id`` column is
slide-level (``model.bags: slide``): one row per slide, model and repeat, each slide carrying
its patient's target; scoring then resamples patients, not slides. What a valid target or prediction is
belongs to the task (:mod:`wsi_pipeline.mil.tasks`). Everything downstream assumes a table
that passed :func:`validate_predictions`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: Columns every predictions table must have, whatever the task, with what they mean (fix messages).
REQUIRED_COLUMNS: dict[str, str] = {
    "patient_id": "patient identifier",
    "model": "model name, e.g. abmil or meanpool",
    "fold": "integer cross-validation fold",
}
#: The repetition of the cross-validation a row comes from (0 when the table has no such column).
REPEAT_COLUMN = "repeat"
#: The column that makes a table slide-level: one row per (patient, slide), not per patient.
SLIDE_COLUMN = "slide_id"
#: Optional time-to-event columns; both or neither.
SURVIVAL_COLUMNS: dict[str, str] = {
    "pfs_months": "progression-free survival time in months",
    "event": "1 if progression was observed, 0 if censored",
}

_EXAMPLES = 5  # how many offending patients an error message lists


def default_task() -> Task:
    """The task a predictions table is read as when none is given: binary (``label``, ``score``)."""
    from wsi_pipeline.mil.tasks.binary import BinaryTask

    return BinaryTask()


def unit_columns(predictions: pd.DataFrame) -> list[str]:
    """What identifies a row's unit of evaluation: ``patient_id``, with ``slide_id`` in a slide-level table."""
    return ["patient_id", SLIDE_COLUMN] if SLIDE_COLUMN in predictions.columns else ["patient_id"]


def has_survival(predictions: pd.DataFrame) -> bool:
    """Whether the table carries time-to-event columns.

    Parameters
    ----------
    predictions
        A predictions table.

    Returns
    -------
    bool
        True if both ``pfs_months`` and ``event`` are columns.
    """
    return all(col in predictions.columns for col in SURVIVAL_COLUMNS)


def load_predictions(path: str | os.PathLike[str], *, task: Task | None = None) -> pd.DataFrame:
    """Read and validate a ``predictions.csv``.

    Parameters
    ----------
    path
        CSV file with the columns of :data:`REQUIRED_COLUMNS`, the task's target and
        prediction columns, and optionally ``repeat`` and :data:`SURVIVAL_COLUMNS`.
    task
        The task the predictions are for (default: binary).

    Returns
    -------
    pandas.DataFrame
        The validated table (see :func:`validate_predictions`).

    Raises
    ------
    WSIPipelineError
        If the file is missing, empty, not parseable as CSV, or its content is invalid;
        the message names the file and, where relevant, the column and patients.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise WSIPipelineError(
            "predictions file not found",
            where=where,
            fix="run the train stage first, or pass the path of an existing predictions.csv",
        )
    try:
        # Identifiers as strings: "007" must stay "007", and a model called "1" is a name.
        table = pd.read_csv(path, dtype={"patient_id": str, SLIDE_COLUMN: str, "model": str})
    except pd.errors.EmptyDataError:
        raise WSIPipelineError(
            "predictions file is empty",
            where=where,
            fix=f"write a header row ({', '.join(REQUIRED_COLUMNS)}, the targets and predictions) and one row per patient and model",
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise WSIPipelineError(
            f"predictions file is not a readable CSV ({exc})",
            where=where,
            fix="write a comma-separated UTF-8 file with a header row",
        ) from None
    return validate_predictions(table, source=where, task=task)


def follow_up_columns(predictions: pd.DataFrame, task: Task | None = None) -> tuple[str, str] | None:
    """The (time, event) columns of a table, when it has both: the task's follow-up columns."""
    time, event = (task or default_task()).follow_up_columns
    return (time, event) if time in predictions.columns and event in predictions.columns else None


def validate_predictions(predictions: pd.DataFrame, *, source: str = "predictions table", task: Task | None = None) -> pd.DataFrame:
    """Check a predictions table for a task and return a clean, typed copy.

    Parameters
    ----------
    predictions
        One row per patient (or slide, with a ``slide_id`` column), model and repeat (see
        the module docstring).
    source
        Where the table came from (a file path), used in error messages.
    task
        The task the predictions are for (default: binary, ``label`` and ``score``). A
        multiclass task must know its classes (bound).

    Returns
    -------
    pandas.DataFrame
        A copy with ``patient_id``/``model`` as ``str``, ``repeat``/``fold`` as ``int``
        (``repeat`` added as 0 when absent), the task's target columns as the task decodes
        them (a binary label as ``int``), numeric prediction columns as ``float`` and, if
        present, the follow-up columns as ``float`` (``NaN`` = no follow-up for that patient),
        sorted by model, repeat, then patient (then slide).

    Raises
    ------
    WSIPipelineError
        Naming the file, the column and example patients, for: a missing column, only one
        of the follow-up columns, missing values, targets or predictions the task rejects
        (a binary label other than 0/1, a score outside [0, 1], ...), non-integer folds,
        negative times, events other than 0/1, a duplicate (patient_id, model, repeat)
        row (slide_id too in a slide-level table), or a patient with different targets
        under different models (or slides).
    """
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    task = task or default_task()
    columns = {**REQUIRED_COLUMNS, **dict.fromkeys(task.target_columns, f"the {task.name} task's target"),
               **dict.fromkeys(task.prediction_columns, f"the {task.name} task's prediction")}
    for col, meaning in columns.items():
        if col not in predictions.columns:
            raise WSIPipelineError(
                f"missing column '{col}' ({meaning}); columns present: {', '.join(map(str, predictions.columns))}",
                where=source,
                fix=f"add a '{col}' column; a {task.name} predictions table needs {', '.join(columns)}",
            )
    follow_up = [c for c in task.follow_up_columns if c not in task.target_columns]
    present = [col for col in follow_up if col in predictions.columns]
    if len(present) == 1:
        missing = next(col for col in follow_up if col not in present)
        raise WSIPipelineError(
            f"has survival column '{present[0]}' but not '{missing}' ({SURVIVAL_COLUMNS.get(missing, 'follow-up')})",
            where=source,
            fix=f"add a '{missing}' column, or drop '{present[0]}' to score without survival analysis",
        )
    if predictions.empty:
        raise WSIPipelineError(
            "predictions table has no rows",
            where=source,
            fix="check that the train stage wrote predictions for at least one patient",
        )

    df = predictions.copy()
    if REPEAT_COLUMN not in df.columns:
        df[REPEAT_COLUMN] = 0
    units = unit_columns(df)
    for col in (*units, "model"):
        _no_missing(df, col, source)
        df[col] = df[col].astype(str)
    for col in ("fold", REPEAT_COLUMN):
        _no_missing(df, col, source)
        df[col] = _numeric(df, col, source)
        _check(df, ~np.isclose(df[col], np.round(df[col])) | (df[col] < 0), col, "is not an integer >= 0", source,
               f"write {col}s as integers 0, 1, 2, ...")
        df[col] = np.round(df[col]).astype(int)

    encoded = by_task(source, lambda: task.targets(df))
    for col, values in task.decode_targets(encoded).items():
        df[col] = values
    by_task(source, lambda: task.check_predictions(df))
    for col in task.prediction_columns:
        numeric = pd.to_numeric(df[col], errors="coerce")
        if numeric.notna().all():
            df[col] = numeric.astype(float)

    if len(present) == 2:
        time, event = follow_up
        for col in follow_up:
            df[col] = _numeric(df, col, source)
        _check(df, df[time] < 0, time, "is negative", source,
               "write follow-up time in months from the start of treatment (>= 0)")
        _check(df, df[event].notna() & ~df[event].isin((0, 1)), event, "is not 0 or 1", source,
               "encode events as 1 = progression observed, 0 = censored (leave empty if unknown)")

    keys = ["patient_id", "model", REPEAT_COLUMN]
    duplicated = df.duplicated([*units, "model", REPEAT_COLUMN], keep=False)
    if duplicated.any() and len(units) > 1:
        slides = df.loc[duplicated, [*units, "model"]].drop_duplicates().head(_EXAMPLES)
        raise WSIPipelineError(
            f"slide(s) predicted more than once by a model in a repeat, e.g. "
            f"{', '.join(f'{s} of {p} ({m})' for p, s, m in slides.itertuples(index=False))}",
            where=source,
            fix="write one row per slide, model and repeat (slide_id unique within each patient)",
        )
    if duplicated.any():
        pairs = df.loc[duplicated, keys].drop_duplicates()
        raise WSIPipelineError(
            f"{len(pairs)} (patient_id, model) pair(s) appear more than once in a repeat, e.g. {_pairs(pairs)}",
            where=source,
            fix="write one row per patient, model and repeat; aggregate several slides of a patient into "
            "one patient-level prediction before scoring",
        )
    for col in task.target_columns:
        n_values = df.groupby("patient_id")[col].nunique()
        conflicting = n_values.index[n_values > 1]
        if len(conflicting):
            raise WSIPipelineError(
                f"column '{col}': {len(conflicting)} patient(s) have different labels under different models or repeats, "
                f"e.g. {_listing(conflicting)}",
                where=source,
                fix="take targets from the cohort table, so every model sees the same truth",
            )
    return df.sort_values(["model", REPEAT_COLUMN, *units], kind="stable").reset_index(drop=True)


def by_task(source: str, check: Callable[[], Any]) -> Any:
    """Run a task's check of a table (or its binding to one), naming the table in its error."""
    try:
        return check()
    except WSIPipelineError as error:
        where = f"{source}: {error.where}" if error.where else source
        raise WSIPipelineError(error.what, where=where, fix=error.fix) from None


def _no_missing(df: pd.DataFrame, col: str, source: str) -> None:
    missing = df[col].isna()
    if missing.any():
        raise WSIPipelineError(
            f"column '{col}' has {int(missing.sum())} empty value(s), at row index {_listing(df.index[missing])}",
            where=source,
            fix=f"fill in '{col}' ({REQUIRED_COLUMNS.get(col, 'the repetition, 0, 1, ...')}) for every row",
        )


def _numeric(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce").astype(float)
    bad = values.isna() & df[col].notna()
    if bad.any():
        examples = df.loc[bad, col].astype(str).head(_EXAMPLES).tolist()
        raise WSIPipelineError(
            f"column '{col}' has non-numeric value(s) {examples} for patient(s) {_listing(df.loc[bad, 'patient_id'])}",
            where=source,
            fix=f"write numbers in '{col}' ({REQUIRED_COLUMNS.get(col) or SURVIVAL_COLUMNS.get(col) or 'a number'})",
        )
    return values


def _check(df: pd.DataFrame, bad: pd.Series, col: str, problem: str, source: str, fix: str) -> None:
    if bad.any():
        rows = df.loc[bad]
        examples = ", ".join(
            f"{p} ({m}): {v!r}" for p, m, v in rows[["patient_id", "model", col]].head(_EXAMPLES).itertuples(index=False)
        )
        raise WSIPipelineError(
            f"column '{col}' {problem} for {int(bad.sum())} row(s), e.g. {examples}",
            where=source,
            fix=fix,
        )


def _pairs(pairs: pd.DataFrame) -> str:
    return ", ".join(f"({p}, {m})" if r == 0 else f"({p}, {m}, repeat {r})" for p, m, r in pairs.head(_EXAMPLES).itertuples(index=False))


def _listing(values: Iterable[object]) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:_EXAMPLES]))
    return shown + (f" and {len(values) - _EXAMPLES} more" if len(values) > _EXAMPLES else "")
