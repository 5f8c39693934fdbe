"""Binary classification: one logit per bag, class-weighted binary cross-entropy.

The behaviour of the demo's training (``mil.train``) as a task: the loss is
``BCEWithLogitsLoss(pos_weight=n_negative / n_positive)`` of the fit patients, averaged over
the bags of a batch; the prediction is ``score`` = sigmoid(logit), the probability of label 1;
scoring reports AUC, accuracy and balanced accuracy at ``threshold`` (the functions of
``scoring.metrics``, so the numbers are those of today's reports).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar, Self

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor
from torch.nn import functional as F

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks.base import (
    Outputs,
    TargetData,
    Task,
    check,
    numeric_column,
    require_columns,
)
from wsi_pipeline.mil.tasks.settings import BinaryConfig
from wsi_pipeline.scoring.metrics import binary_metrics


class BinaryTask(Task):
    """Binary classification of bags (see the module docstring).

    Parameters
    ----------
    config
        Settings; defaults when omitted.
    pos_weight
        Weight of positive bags in the loss; :meth:`fit` computes it from the fit patients.
        ``None`` = not fitted yet (the loss then refuses to run unless ``config.balanced``
        is False, which uses 1).
    """

    name: ClassVar[str] = "binary"
    prediction_columns: ClassVar[tuple[str, ...]] = ("score",)
    metric_names: ClassVar[tuple[str, ...]] = ("auc", "accuracy", "balanced_accuracy")
    selection_metric: ClassVar[str] = "auc"
    metric_labels: ClassVar[dict[str, str]] = {"auc": "AUC", "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy"}
    plot_kind: ClassVar[str | None] = "roc"

    def __init__(self, config: BinaryConfig | None = None, *, pos_weight: float | None = None) -> None:
        self.config = config or BinaryConfig()
        if pos_weight is not None and not (math.isfinite(pos_weight) and pos_weight > 0):
            raise ValueError(f"pos_weight must be a positive number, got {pos_weight!r}")
        self._pos_weight = None if pos_weight is None else float(pos_weight)

    def __repr__(self) -> str:
        return f"BinaryTask({self.config!r}, pos_weight={self._pos_weight!r})"

    @property
    def n_outputs(self) -> int:
        return 1

    @property
    def target_columns(self) -> tuple[str, ...]:
        return (self.config.label_column,)

    def at_threshold(self, value: float) -> BinaryTask:
        """This task deciding at ``value`` instead: its other settings and its fitted ``pos_weight`` kept.

        Scoring uses it for a threshold chosen on validation predictions (``scoring.threshold``).
        """
        return BinaryTask(replace(self.config, threshold=float(value)), pos_weight=self._pos_weight)

    @property
    def pos_weight(self) -> float | None:
        """The loss's weight on positive bags (1 when not balanced; None before :meth:`fit`)."""
        return self._pos_weight if self.config.balanced else 1.0

    @property
    def fitted_state(self) -> dict[str, Any]:
        return {"pos_weight": self._pos_weight}

    @property
    def is_fitted(self) -> bool:
        return self.pos_weight is not None

    def fit(self, targets: np.ndarray) -> Self:
        """Return a copy with ``pos_weight = n_negative / n_positive`` of ``targets`` (0/1).

        Raises
        ------
        WSIPipelineError
            If the fit patients hold one class only (whether or not the loss is balanced:
            a classifier cannot be trained on one class).
        """
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        n_pos = int(y.sum())
        if len(y) == 0 or n_pos in (0, len(y)):
            raise WSIPipelineError(
                f"all {len(y)} fit patients have label {int(y[0]) if len(y) else '-'}; training needs both classes",
                where=f"column '{self.config.label_column}'",
                fix="plan folds stratified by label, or add patients of the other class",
            )
        return type(self)(self.config, pos_weight=(len(y) - n_pos) / n_pos)

    def targets(self, data: TargetData) -> np.ndarray:
        """The labels as float64 0/1, shape (n,).

        Raises
        ------
        WSIPipelineError
            For a missing column, empty or non-numeric values, or values other than 0/1.
        """
        name = self.config.label_column
        values, ids = numeric_column(data, name, setting="label_column", meaning="the 0/1 label")
        check(~np.isin(values, (0.0, 1.0)), ids, values, name, "is not 0 or 1",
              f"encode the label as 0 ({self.config.negative_name}) and 1 ({self.config.positive_name})")
        return values

    def decode_targets(self, targets: np.ndarray) -> dict[str, np.ndarray]:
        return {self.config.label_column: np.asarray(targets).reshape(-1).astype(np.int64)}

    def stratify_labels(self, targets: np.ndarray) -> np.ndarray:
        """The label itself (int)."""
        return np.asarray(targets).reshape(-1).astype(np.int64)

    def loss(self, outputs: Tensor, targets: Tensor | np.ndarray) -> Tensor:
        """Mean over bags of ``-[w y log s + (1 - y) log(1 - s)]``, ``s`` = sigmoid(logit), ``w`` = pos_weight."""
        self._require_fitted("the loss")
        logits = self._outputs_tensor(outputs)[:, 0]
        y = torch.as_tensor(targets, dtype=logits.dtype, device=logits.device).reshape(-1)
        weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=weight)

    def model_selection_score(self, outputs: Outputs, targets: np.ndarray) -> float:
        """ROC AUC of the logits; NaN when the targets hold one class."""
        logits = self._outputs_array(outputs)[:, 0]
        y = np.asarray(targets).reshape(-1)
        if len(np.unique(y)) < 2:
            return math.nan
        return float(roc_auc_score(y, logits))

    def predictions(self, outputs: Outputs) -> dict[str, np.ndarray]:
        """``score``: sigmoid of the logit, the probability of label 1 (float64)."""
        logits = self._outputs_array(outputs)[:, 0]
        return {"score": 1.0 / (1.0 + np.exp(-logits))}

    def metrics(self, frame: TargetData) -> dict[str, float]:
        """AUC, accuracy and balanced accuracy at ``config.threshold`` (see ``scoring.metrics``)."""
        label = self.config.label_column
        require_columns(frame, (label, "score"), self.name)
        y = np.asarray(frame[label], dtype=np.float64).astype(int)
        return binary_metrics(y, np.asarray(frame["score"], dtype=np.float64), self.config.threshold)

    # -- reporting ----------------------------------------------------------------------
    def describe(self) -> str:
        c = self.config
        return f"binary classification of '{c.label_column}' (1 = {c.positive_name}, 0 = {c.negative_name}; threshold {c.threshold:g})"

    def check_predictions(self, frame: TargetData) -> None:
        """``score`` present, numeric and a probability in [0, 1]."""
        super().check_predictions(frame)
        score, ids = numeric_column(frame, "score", setting="", meaning="the predicted probability of label 1")
        check((score < 0) | (score > 1), ids, score, "score", "is outside [0, 1]",
              "write probabilities of class 1 (apply a sigmoid or softmax to logits)")

    def counts(self, frame: TargetData) -> dict[str, Any]:
        """``n_positive``: patients with label 1."""
        return {"n_positive": int(np.asarray(frame[self.config.label_column], dtype=np.float64).sum())}

    def summary(self, frame: TargetData) -> str:
        n_positive = self.counts(frame)["n_positive"]
        n = len(np.asarray(frame[self.config.label_column]))
        return f"{n_positive} {self.config.positive_name}, {n - n_positive} {self.config.negative_name}"

    def risk_groups(self, frame: TargetData) -> tuple[np.ndarray, dict[bool, str]]:
        """Predicted positive (``score >= threshold``) against predicted negative."""
        t = self.config.threshold
        groups = np.asarray(frame["score"], dtype=np.float64) >= t
        return groups, {True: f"predicted {self.config.positive_name} (score \u2265 {t:.2f})",
                        False: f"predicted {self.config.negative_name} (score < {t:.2f})"}
