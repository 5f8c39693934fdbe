"""A run's binary decision thresholds, chosen per model on the folds' inner validation predictions.

Each fold's kept model also predicts the fold's inner validation patients (the patients its
epoch was selected on, never its test patients); the train stage writes those rows to
``validation_predictions.csv``. With ``scoring.threshold_method`` ``youden`` or
``sensitivity``, a model's threshold is chosen once on all its validation rows pooled over
folds and repeats, then every test row of that model is scored at it. One threshold per model
rather than per fold keeps the test metrics those of one decision rule, as a deployed model
would have; the rows it is chosen on are out of every test set they could inflate.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wsi_pipeline.errors import WSIPipelineError
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
