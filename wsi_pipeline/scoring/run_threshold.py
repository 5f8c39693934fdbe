"""A run's decision rules, fixed per model on the folds' inner validation predictions.

Each fold's kept model also predicts the fold's inner validation patients (the patients its
epoch was selected on, never its test patients); the train stage writes those rows to
``validation_predictions.csv``. Two rules are fixed on them, once per model on its validation
rows pooled over folds and repeats, then applied to every test row of that model:

- a binary task's decision threshold, with ``scoring.threshold_method`` ``youden`` or
  ``sensitivity`` (:func:`validation_thresholds`);
- a survival task's cut-off between predicted risk groups (Kaplan-Meier curves, log-rank test,
  hazard ratio): the median validation risk (:func:`validation_risk_cutoffs`).

One rule per model rather than per fold keeps the test metrics those of one decision rule, as a
deployed model would have; the rows it is fixed on are out of every test set they could inflate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.survival_metrics import RiskCutoff
from wsi_pipeline.scoring.threshold import Threshold, choose_threshold


def validation_thresholds(
    path: str | Path, models: list[str], method: str, *, label_column: str = "label", target_sensitivity: float | None = None
) -> dict[str, Threshold]:
    """Model -> its threshold by ``method`` on its rows of the validation predictions file.

    Parameters
    ----------
    path
        ``validation_predictions.csv`` of the run (columns ``model``, the label and ``score``).
    models
        The models being scored; each needs validation rows with both labels.
    method
        ``youden`` or ``sensitivity`` (``fixed`` needs no file: use the scoring threshold).
    label_column
        The binary task's label column.
    target_sensitivity
        The ``sensitivity`` rule's target.

    Raises
    ------
    WSIPipelineError
        When the file is missing, or a model has no validation rows or only one class there.
    """
    path = Path(path)
    if not path.is_file():
        raise WSIPipelineError(
            "no validation predictions to choose the decision threshold on",
            where=str(path),
            fix="run the train stage again (it writes this file), or set scoring.threshold_method: fixed",
        )
    table = pd.read_csv(path, dtype={"patient_id": str})
    chosen = {}
    for model in models:
        rows = table[table["model"] == model]
        labels = rows[label_column].to_numpy()
        if len(set(labels.tolist())) < 2:
            raise WSIPipelineError(
                f"model '{model}' has {len(rows)} validation prediction(s) with {len(set(labels.tolist()))} class(es); "
                f"a {method} threshold needs both",
                where=str(path),
                fix="use more patients (or a larger validation.val_fraction), or set scoring.threshold_method: fixed",
            )
        chosen[model] = choose_threshold(
            method, validation_labels=labels, validation_scores=rows["score"].to_numpy(), target_sensitivity=target_sensitivity
        )
    return chosen


def validation_risk_cutoffs(path: str | Path, models: list[str], *, risk_column: str = "risk") -> dict[str, RiskCutoff]:
    """Model -> the median predicted risk of its validation rows (survival), for models that have any.

    Parameters
    ----------
    path
        ``validation_predictions.csv`` of the run; when it is absent (a run trained before the
        file existed), no model gets a cut-off.
    models
        The models being scored.
    risk_column
        The survival task's prediction column.

    Returns
    -------
    dict
        Model -> its cut-off (rule ``validation``). A model left out is split at the median risk
        of its scored rows, and the report says so.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype={"patient_id": str})
    if risk_column not in table:
        return {}
    cutoffs = {}
    for model in models:
        risk = table.loc[table["model"] == model, risk_column].dropna().to_numpy()
        if risk.size:
            cutoffs[model] = RiskCutoff(float(np.median(risk)), "validation")
    return cutoffs
