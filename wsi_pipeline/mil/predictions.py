"""The run's out-of-fold predictions table, assembled from the folds' rows and written as ``predictions.csv``.

Each training task returns its test patients' rows (:func:`~wsi_pipeline.mil.cv.prediction_columns`:
``patient_id, model, repeat, fold``, the task's target columns, its prediction columns); this
module puts them in one table with the patients' follow-up from the cohort and the encoder the
features came from, so the file is self-describing when it travels alone (``wsi-pipeline
score`` reads it without the run).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.cohort.table import OUTCOME_COLUMNS, Cohort
from wsi_pipeline.mil.cv import ID_COLUMNS, SLIDE_COLUMN

#: The table's name in a run folder.
PREDICTIONS_FILE = "predictions.csv"
#: Each fold's inner validation patients predicted by the fold's kept model, same columns: what
#: a decision threshold is chosen on (scoring.threshold_method), never the test predictions.
VALIDATION_PREDICTIONS_FILE = "validation_predictions.csv"


def assemble_predictions(rows: Iterable[Mapping[str, Any]], cohort: Cohort, encoder_id: str) -> pd.DataFrame:
    """One table of every fold's predictions, with follow-up and encoder columns.

    Parameters
    ----------
    rows
        Prediction rows of every (repeat, fold, aggregator): ``patient_id, model, repeat,
        fold``, the task's target and prediction columns; slide-level rows
        (``model.bags: slide``) also ``slide_id``.
    cohort
        The cohort; its follow-up columns (``pfs_months``, ``event`` when the table has them
        and they are not the task's targets already), then ``site`` and the columns kept for
        ``scoring.subgroups``, are joined on ``patient_id``.
    encoder_id
        The store key of the features the models were trained on (names a demo encoder as such).

    Returns
    -------
    pandas.DataFrame
        The rows' columns (binary: ``patient_id, model, repeat, fold, label, score``), then
        the cohort's follow-up, site and subgroup columns, then ``encoder``; sorted by model, repeat, patient
        (and slide).

    Raises
    ------
    ValueError
        If the rows lack an id column (a training task returned something else: a bug).
    """
    frame = pd.DataFrame(list(rows))
    missing = [column for column in ID_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"prediction rows lack column(s) {', '.join(missing)}; got {', '.join(map(str, frame.columns))}")
    order = ["model", "repeat", "patient_id", *([SLIDE_COLUMN] if SLIDE_COLUMN in frame.columns else [])]
    frame = frame.sort_values(order).reset_index(drop=True)
    # Targets come from the task's rows (what the model was scored against), not joined twice.
    # Besides follow-up, the patient's site and scoring.subgroups columns: scoring breaks its metrics down by them.
    per_patient = [c for c in cohort.patients.columns if c != "patient_id" and c not in frame.columns]
    follow_up = [c for c in OUTCOME_COLUMNS if c in per_patient] + [c for c in per_patient if c not in OUTCOME_COLUMNS]
    if follow_up:
        frame = frame.join(cohort.patients.set_index("patient_id")[follow_up], on="patient_id")
    frame["encoder"] = encoder_id
    return frame


def write_predictions(predictions: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a predictions table as CSV, atomically (a reader never sees half a table).

    Parameters
    ----------
    predictions
        The table (:func:`assemble_predictions`).
    path
        The CSV file, usually ``<run>/predictions.csv``.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False)
    return Path(path)
