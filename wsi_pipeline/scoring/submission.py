"""The challenge submission file: one row per patient, in the layout the workflow declares.

The workflow's ``scoring.submission`` section (:class:`~wsi_pipeline.config.submission.SubmissionConfig`)
names the model, the file, the id column's header and each prediction column's header. Each
patient's value is the mean of the model's out-of-fold predictions over the repeats of the
cross-validation (and over the patient's slides, with slide-level bags): every repeat predicts
every patient with models that never trained on them, so the mean is an ensemble of honest
predictions. A multiclass ``predicted`` column is the most probable class of the mean
probabilities, not an average of labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.config.submission import (
    CLASS_PREFIX,
    PREDICTED_CLASS,
    SubmissionConfig,
)
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.predictions import REPEAT_COLUMN

#: Field separator of each format.
SEPARATORS = {"csv": ",", "tsv": "\t"}


@dataclass(frozen=True)
class SubmissionSummary:
    """What was written, for the report.

    Attributes
    ----------
    path
        The file.
    model
        The model submitted.
    n_patients
        Rows of the file.
    n_repeats
        Repeats averaged per patient.
    header
        The file's columns, in order.
    """

    path: Path
    model: str
    n_patients: int
    n_repeats: int
    header: tuple[str, ...]

    def describe(self) -> str:
        """One line for the report, e.g. ``submission.csv: abmil, 120 patients, mean over 3 repeats (patient_id, probability)``."""
        repeats = f", mean over {self.n_repeats} repeats" if self.n_repeats > 1 else ""
        return (f"{self.path.name}: out-of-fold predictions of {self.model}, {self.n_patients} patients{repeats} "
                f"({', '.join(self.header)})")


def submission_table(predictions: pd.DataFrame, config: SubmissionConfig, prediction_columns: tuple[str, ...]) -> pd.DataFrame:
    """The submission's rows: one per patient, sorted by id, columns renamed as configured.

    Parameters
    ----------
    predictions
        A validated predictions table (:func:`~wsi_pipeline.scoring.predictions.validate_predictions`).
    config
        The workflow's submission section.
    prediction_columns
        The task's prediction columns: those written when ``config.columns`` is empty.

    Returns
    -------
    pandas.DataFrame
        ``config.id_column`` (the patient id, as text), then each chosen column under its header.

    Raises
    ------
    WSIPipelineError
        If the table holds no row of the model, or lacks a chosen column.
    """
    rows = predictions[predictions["model"] == config.model]
    if rows.empty:
        raise WSIPipelineError(
            f"no predictions of model '{config.model}' to submit (models: {', '.join(sorted(predictions['model'].unique()))})",
            where="scoring.submission.model", fix="name a model of model.aggregators that trained",
        )
    chosen = dict(config.columns) or {column: column for column in prediction_columns}
    missing = [column for column in chosen if column not in rows.columns]
    if missing:
        raise WSIPipelineError(
            f"the predictions have no column {', '.join(map(repr, missing))} (they have {', '.join(map(str, rows.columns))})",
            where="scoring.submission.columns", fix="name prediction columns the task writes",
        )
    numeric = [column for column in chosen if column != PREDICTED_CLASS]
    # Mean over repeats (and a patient's slides): the groupby averages every row of a patient.
    means = rows.groupby("patient_id", sort=True)[numeric].mean() if numeric else pd.DataFrame(index=sorted(rows["patient_id"].unique()))
    if PREDICTED_CLASS in chosen:
        means[PREDICTED_CLASS] = _most_probable(rows)
    table = means[list(chosen)].rename(columns=chosen).reset_index(names=config.id_column)
    table[config.id_column] = table[config.id_column].astype(str)
    return table


def write_submission(
    predictions: pd.DataFrame, config: SubmissionConfig, out_dir: str | os.PathLike[str], prediction_columns: tuple[str, ...]
) -> SubmissionSummary:
    """Write the submission file into ``out_dir`` (atomically) and say what it holds.

    Parameters
    ----------
    predictions
        A validated predictions table.
    config
        The workflow's submission section.
    out_dir
        The run folder.
    prediction_columns
        The task's prediction columns (written when ``config.columns`` is empty).

    Returns
    -------
    SubmissionSummary
        The file, model, number of patients and repeats, header.
    """
    table = submission_table(predictions, config, prediction_columns)
    path = Path(out_dir) / config.file
    float_format = None if config.decimals is None else f"%.{config.decimals}f"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, sep=SEPARATORS[config.format], float_format=float_format)
    n_repeats = int(predictions.loc[predictions["model"] == config.model, REPEAT_COLUMN].nunique())
    return SubmissionSummary(path, config.model, len(table), n_repeats, tuple(table.columns))


def _most_probable(rows: pd.DataFrame) -> pd.Series:
    """Per patient, the class whose mean ``prob_<class>`` is highest (the first class on a tie)."""
    probability_columns = [c for c in rows.columns if c.startswith(CLASS_PREFIX)]
    if not probability_columns:
        raise WSIPipelineError("the predictions have no prob_<class> column to choose the predicted class from",
                               where="scoring.submission.columns", fix="submit 'predicted' only for a multiclass task")
    means = rows.groupby("patient_id", sort=True)[probability_columns].mean()
    classes = np.array([c[len(CLASS_PREFIX):] for c in probability_columns], dtype=object)
    return pd.Series(classes[np.argmax(means.to_numpy(), axis=1)], index=means.index)
