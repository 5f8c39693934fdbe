"""The predictions table: its columns, validation with actionable errors, and loading.

One row per patient and model, written by the train stage (out-of-fold predictions) or by
hand. Everything downstream assumes a table that passed :func:`validate_predictions`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError

#: Columns every predictions table must have, with what they mean (used in fix messages).
REQUIRED_COLUMNS: dict[str, str] = {
    "patient_id": "patient identifier",
    "model": "model name, e.g. abmil or meanpool",
    "fold": "integer cross-validation fold",
    "label": "true label, 0 or 1",
    "score": "predicted probability of class 1, in [0, 1]",
}
#: Optional time-to-event columns; both or neither.
SURVIVAL_COLUMNS: dict[str, str] = {
    "pfs_months": "progression-free survival time in months",
    "event": "1 if progression was observed, 0 if censored",
}

_EXAMPLES = 5  # how many offending patients an error message lists


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


def load_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a ``predictions.csv``.

    Parameters
    ----------
    path
        CSV file with the columns of :data:`REQUIRED_COLUMNS` (and optionally
        :data:`SURVIVAL_COLUMNS`).

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
        table = pd.read_csv(path, dtype={"patient_id": str, "model": str})
    except pd.errors.EmptyDataError:
        raise WSIPipelineError(
            "predictions file is empty",
            where=where,
            fix=f"write a header row ({', '.join(REQUIRED_COLUMNS)}) and one row per patient and model",
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise WSIPipelineError(
            f"predictions file is not a readable CSV ({exc})",
            where=where,
            fix="write a comma-separated UTF-8 file with a header row",
        ) from None
    return validate_predictions(table, source=where)


def validate_predictions(predictions: pd.DataFrame, *, source: str = "predictions table") -> pd.DataFrame:
    """Check a predictions table and return a clean, typed copy.

    Parameters
    ----------
    predictions
        One row per patient and model (see :data:`REQUIRED_COLUMNS`).
    source
        Where the table came from (a file path), used in error messages.

    Returns
    -------
    pandas.DataFrame
        A copy with ``patient_id``/``model`` as ``str``, ``fold``/``label`` as ``int``,
        ``score`` as ``float`` and, if present, ``pfs_months``/``event`` as ``float``
        (``NaN`` = no follow-up for that patient), sorted by model then patient.

    Raises
    ------
    WSIPipelineError
        Naming the file, the column and example patients, for: a missing column, only one
        of the survival columns, missing values, labels other than 0/1, scores outside
        [0, 1], non-integer folds, negative times, events other than 0/1, a duplicate
        (patient_id, model) pair, or a patient with different labels under different models.
    """
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    for col, meaning in REQUIRED_COLUMNS.items():
        if col not in predictions.columns:
            raise WSIPipelineError(
                f"missing column '{col}' ({meaning}); columns present: {', '.join(map(str, predictions.columns))}",
                where=source,
                fix=f"add a '{col}' column; a predictions table needs {', '.join(REQUIRED_COLUMNS)}",
            )
    present = [col for col in SURVIVAL_COLUMNS if col in predictions.columns]
    if len(present) == 1:
        missing = next(col for col in SURVIVAL_COLUMNS if col not in present)
        raise WSIPipelineError(
            f"has survival column '{present[0]}' but not '{missing}' ({SURVIVAL_COLUMNS[missing]})",
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
    for col in ("patient_id", "model"):
        _no_missing(df, col, source)
        df[col] = df[col].astype(str)
    for col in ("fold", "label", "score"):
        _no_missing(df, col, source)
        df[col] = _numeric(df, col, source)

    _check(df, ~np.isclose(df["fold"], np.round(df["fold"])), "fold", "is not an integer", source,
           "write folds as integers 0, 1, 2, ...")
    df["fold"] = np.round(df["fold"]).astype(int)
    _check(df, ~df["label"].isin((0, 1)), "label", "is not 0 or 1", source,
           "encode labels as 0/1 (1 = the class whose probability 'score' is)")
    df["label"] = df["label"].astype(int)
    _check(df, (df["score"] < 0) | (df["score"] > 1), "score", "is outside [0, 1]", source,
           "write probabilities of class 1 (apply a sigmoid or softmax to logits)")

    if present:
        for col in SURVIVAL_COLUMNS:
            df[col] = _numeric(df, col, source)
        _check(df, df["pfs_months"] < 0, "pfs_months", "is negative", source,
               "write follow-up time in months from the start of treatment (>= 0)")
        _check(df, df["event"].notna() & ~df["event"].isin((0, 1)), "event", "is not 0 or 1", source,
               "encode events as 1 = progression observed, 0 = censored (leave empty if unknown)")

    duplicated = df.duplicated(["patient_id", "model"], keep=False)
    if duplicated.any():
        pairs = df.loc[duplicated, ["patient_id", "model"]].drop_duplicates()
        raise WSIPipelineError(
            f"{len(pairs)} (patient_id, model) pair(s) appear more than once, e.g. {_pairs(pairs)}",
            where=source,
            fix="write one row per patient and model; aggregate several slides of a patient into "
            "one patient-level prediction before scoring",
        )
    n_labels = df.groupby("patient_id")["label"].nunique()
    conflicting = n_labels.index[n_labels > 1]
    if len(conflicting):
        raise WSIPipelineError(
            f"column 'label': {len(conflicting)} patient(s) have different labels under different models, "
            f"e.g. {_listing(conflicting)}",
            where=source,
            fix="take labels from the cohort table, so every model sees the same truth",
        )
    return df.sort_values(["model", "patient_id"], kind="stable").reset_index(drop=True)


def _no_missing(df: pd.DataFrame, col: str, source: str) -> None:
    missing = df[col].isna()
    if missing.any():
        raise WSIPipelineError(
            f"column '{col}' has {int(missing.sum())} empty value(s), at row index {_listing(df.index[missing])}",
            where=source,
            fix=f"fill in '{col}' ({REQUIRED_COLUMNS[col]}) for every row",
        )


def _numeric(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce").astype(float)
    bad = values.isna() & df[col].notna()
    if bad.any():
        examples = df.loc[bad, col].astype(str).head(_EXAMPLES).tolist()
        raise WSIPipelineError(
            f"column '{col}' has non-numeric value(s) {examples} for patient(s) {_listing(df.loc[bad, 'patient_id'])}",
            where=source,
            fix=f"write numbers in '{col}' ({REQUIRED_COLUMNS.get(col) or SURVIVAL_COLUMNS[col]})",
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
    return ", ".join(f"({p}, {m})" for p, m in pairs.head(_EXAMPLES).itertuples(index=False))


def _listing(values: Iterable[object]) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:_EXAMPLES]))
    return shown + (f" and {len(values) - _EXAMPLES} more" if len(values) > _EXAMPLES else "")
