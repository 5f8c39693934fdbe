"""Multiclass classification: one logit per class, class-weighted cross-entropy.

Classes are names. Labels read from a table are compared as text, with integer-valued
numbers written without a decimal point (``2``, ``2.0`` and ``"2"`` are class ``"2"``), so a
label column read back from CSV as integers matches classes given in YAML as strings. The
classes come from ``config.classes`` or, when that is empty, from the whole labelled cohort
(:meth:`MulticlassTask.bind`); either way they are sorted (numerically when every class is an
integer), and output ``k`` of the aggregator is the logit of ``classes[k]``.

Loss: ``mean_i w[y_i] * CE_i`` with inverse-frequency weights of the fit patients,
``w[k] = n / (K * n_k)`` (scikit-learn's "balanced" weights, whose mean over the fit patients
is 1). This is *not* PyTorch's weighted ``reduction="mean"``, which divides by the sum of the
batch's weights: with one bag per step that division cancels the weight and the loss is no
longer class-weighted. Dividing by the batch size keeps the weighting at any batch size, as the
binary task's ``pos_weight`` does. A class absent from a fold's fit patients gets the largest
weight of the present classes (it is at least as rare as the rarest of them).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, Self

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)
from torch import Tensor
from torch.nn import functional as F

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks.base import (
    Outputs,
    TargetData,
    Task,
    check,
    column,
    is_missing,
    numeric_column,
    require_columns,
)
from wsi_pipeline.mil.tasks.settings import (
    MulticlassConfig,
    class_key,
    sorted_classes,
)


class MulticlassTask(Task):
    """Multiclass classification of bags (see the module docstring).

    Parameters
    ----------
    config
        Settings; defaults when omitted.
    class_weights
        Loss weight per class, in class order; :meth:`fit` computes them. ``None`` = not
        fitted (the loss refuses to run unless ``config.balanced`` is False).
    """

    name: ClassVar[str] = "multiclass"
    metric_names: ClassVar[tuple[str, ...]] = ("macro_auc", "accuracy", "balanced_accuracy", "macro_f1")
    selection_metric: ClassVar[str] = "macro_auc"
    plot_kind: ClassVar[str | None] = "roc_ovr"
    metric_labels: ClassVar[dict[str, str]] = {
        "macro_auc": "Macro AUC (one-vs-rest)", "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
    }

    def __init__(self, config: MulticlassConfig | None = None, *, class_weights: Sequence[float] | None = None) -> None:
        self.config = config or MulticlassConfig()
        if class_weights is not None:
            weights = np.asarray(class_weights, dtype=np.float64)
            if weights.shape != (len(self.classes),) or not (np.isfinite(weights).all() and (weights > 0).all()):
                raise ValueError(f"class_weights must be {len(self.classes)} positive numbers, got {class_weights!r}")
            class_weights = [float(w) for w in weights]
        self._class_weights = class_weights

    def __repr__(self) -> str:
        return f"MulticlassTask({self.config!r}, class_weights={self._class_weights!r})"

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names; output ``k`` is the logit of ``classes[k]``."""
        return self.config.classes

    @property
    def prediction_columns(self) -> tuple[str, ...]:  # type: ignore[override]  # depends on the classes
        return (*(f"prob_{c}" for c in self._known_classes()), "predicted")

    @property
    def n_outputs(self) -> int:
        return len(self._known_classes())

    @property
    def target_columns(self) -> tuple[str, ...]:
        return (self.config.label_column,)

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weight per class (all 1 when not balanced; None before :meth:`fit`)."""
        return self._class_weights if self.config.balanced else [1.0] * len(self.classes)

    @property
    def fitted_state(self) -> dict[str, Any]:
        return {"class_weights": self._class_weights}

    @property
    def is_fitted(self) -> bool:
        return bool(self.classes) and self.class_weights is not None

    def _known_classes(self) -> tuple[str, ...]:
        if not self.classes:
            raise RuntimeError("multiclass task without configured classes: call task.bind(cohort) first")
        return self.classes

    def bind(self, data: TargetData) -> Self:
        """Return the task with the cohort's sorted classes when none are configured.

        Raises
        ------
        WSIPipelineError
            For a missing column, empty labels, or fewer than two classes in the cohort.
        """
        if self.classes:
            return self
        name = self.config.label_column
        values, ids = column(data, name, setting="label_column", meaning="the class")
        check(is_missing(values), ids, values, name, "is empty",
              f"fill in '{name}' for every patient, or drop those patients")
        classes = sorted_classes(values)
        if len(classes) < 2:
            raise WSIPipelineError(
                f"column '{name}' holds {len(classes)} class(es) ({', '.join(classes)}); a multiclass task needs 2 or more",
                where=f"column '{name}'",
                fix="check the label column, or use a binary task",
            )
        return type(self)(replace(self.config, classes=classes))

    def fit(self, targets: np.ndarray) -> Self:
        """Return a copy with inverse-frequency class weights of ``targets`` (class indices).

        Raises
        ------
        WSIPipelineError
            If the fit patients hold fewer than two classes.
        """
        k = self.n_outputs
        y = np.asarray(targets, dtype=np.int64).reshape(-1)
        counts = np.bincount(y, minlength=k).astype(np.float64)
        present = counts > 0
        if present.sum() < 2:
            raise WSIPipelineError(
                f"the {len(y)} fit patients hold {int(present.sum())} class(es); training needs at least two",
                where=f"column '{self.config.label_column}'",
                fix="plan folds stratified by class, or add patients of the other classes",
            )
        weights = np.zeros(k)
        weights[present] = len(y) / (k * counts[present])
        weights[~present] = weights[present].max()
        return type(self)(self.config, class_weights=weights.tolist())

    def targets(self, data: TargetData) -> np.ndarray:
        """Class indices into :attr:`classes`, int64, shape (n,).

        Raises
        ------
        WSIPipelineError
            For a missing column, empty labels, or a class not among :attr:`classes`.
        """
        classes = self._known_classes()
        name = self.config.label_column
        values, ids = column(data, name, setting="label_column", meaning="the class")
        check(is_missing(values), ids, values, name, "is empty",
              f"fill in '{name}' for every patient, or drop those patients")
        keys = [class_key(v) for v in values]
        index = {c: i for i, c in enumerate(classes)}
        check(np.array([key not in index for key in keys], dtype=bool), ids, values, name, "is not a known class",
              f"use one of the classes {', '.join(classes)}, or add the class to task.classes")
        return np.array([index[key] for key in keys], dtype=np.int64)

    def decode_targets(self, targets: np.ndarray) -> dict[str, np.ndarray]:
        classes = np.asarray(self._known_classes(), dtype=object)
        return {self.config.label_column: classes[np.asarray(targets, dtype=np.int64).reshape(-1)]}

    def stratify_labels(self, targets: np.ndarray) -> np.ndarray:
        """The class index."""
        return np.asarray(targets, dtype=np.int64).reshape(-1)

    def loss(self, outputs: Tensor, targets: Tensor | np.ndarray) -> Tensor:
        """``mean_i w[y_i] * -log softmax(outputs_i)[y_i]`` (divided by the batch size, not by the weights)."""
        self._require_fitted("the loss")
        logits = self._outputs_tensor(outputs)
        y = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
        weights = torch.tensor(self.class_weights, dtype=logits.dtype, device=logits.device)
        return (F.cross_entropy(logits, y, reduction="none") * weights[y]).mean()

    def _probabilities(self, outputs: Outputs) -> np.ndarray:
        logits = self._outputs_array(outputs)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def model_selection_score(self, outputs: Outputs, targets: np.ndarray) -> float:
        """Macro one-vs-rest AUC of the softmax probabilities (see :func:`macro_ovr_auc`)."""
        return macro_ovr_auc(np.asarray(targets, dtype=np.int64).reshape(-1), self._probabilities(outputs))

    def predictions(self, outputs: Outputs) -> dict[str, np.ndarray]:
        """``prob_<class>`` (softmax) for every class, then ``predicted``: the most probable class."""
        probabilities = self._probabilities(outputs)
        columns = {f"prob_{c}": probabilities[:, k] for k, c in enumerate(self.classes)}
        columns["predicted"] = np.asarray(self.classes, dtype=object)[probabilities.argmax(axis=1)]
        return columns

    def metrics(self, frame: TargetData) -> dict[str, float]:
        """Macro one-vs-rest AUC, accuracy, balanced accuracy and macro F1 of ``predicted``.

        Balanced accuracy is the mean recall over the classes present among the labels
        (scikit-learn's definition); macro F1 averages over the classes among labels and
        predictions, a class never predicted scoring 0. NaN on an empty table; macro AUC
        and balanced accuracy are NaN with fewer than two classes among the labels.
        """
        label = self.config.label_column
        require_columns(frame, (label, *self.prediction_columns), self.name)
        index = {c: i for i, c in enumerate(self.classes)}
        y = np.array([index.get(class_key(v), -1) for v in np.asarray(frame[label])], dtype=np.int64)
        predicted = np.array([index.get(class_key(v), -1) for v in np.asarray(frame["predicted"])], dtype=np.int64)
        if (y < 0).any() or (predicted < 0).any():
            raise WSIPipelineError(
                f"the predictions table has classes outside {', '.join(self.classes)}",
                where="predictions table",
                fix="score the table with the task (and classes) it was predicted with",
            )
        if len(y) == 0:
            return dict.fromkeys(self.metric_names, math.nan)
        probabilities = np.column_stack([np.asarray(frame[f"prob_{c}"], dtype=np.float64) for c in self.classes])
        two_classes = len(np.unique(y)) >= 2
        with warnings.catch_warnings():
            # Small tables (bootstrap resamples) often predict a class absent from the labels: expected.
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true", category=UserWarning)
            return self._scores(y, predicted, probabilities, two_classes)

    @staticmethod
    def _scores(y: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, two_classes: bool) -> dict[str, float]:
        return {
            "macro_auc": macro_ovr_auc(y, probabilities),
            "accuracy": float(accuracy_score(y, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(y, predicted)) if two_classes else math.nan,
            "macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
        }

    # -- reporting ----------------------------------------------------------------------
    def describe(self) -> str:
        classes = ", ".join(self.classes) if self.classes else "from the cohort"
        return f"multiclass classification of '{self.config.label_column}' (classes {classes})"

    def check_predictions(self, frame: TargetData) -> None:
        """Every ``prob_<class>`` a probability in [0, 1]; ``predicted`` one of the classes."""
        require_columns(frame, self.prediction_columns, self.name)
        for name in self.prediction_columns[:-1]:
            values, ids = numeric_column(frame, name, setting="", meaning="a predicted class probability")
            check((values < 0) | (values > 1), ids, values, name, "is outside [0, 1]", "write softmax probabilities")
        predicted, ids = column(frame, "predicted", setting="", meaning="the predicted class")
        check(np.array([class_key(v) not in self.classes for v in predicted], dtype=bool), ids, predicted, "predicted",
              "is not a known class", f"predict one of the classes {', '.join(self.classes)}")

    def summary(self, frame: TargetData) -> str:
        return ", ".join(f"{n} {c}" for c, n in self.counts(frame)["n_per_class"].items())

    def counts(self, frame: TargetData) -> dict[str, Any]:
        """``n_per_class``: patients per true class."""
        keys = [class_key(v) for v in np.asarray(frame[self.config.label_column])]
        return {"n_per_class": {c: keys.count(c) for c in self.classes}}


def macro_ovr_auc(y: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest ROC AUC of each class's probability.

    Equal to ``roc_auc_score(y, probabilities, multi_class="ovr", average="macro")`` when every
    class occurs among ``y``; a class absent from ``y`` (rare classes in a small validation
    set) is left out of the mean instead of failing. NaN with fewer than two classes present.
    """
    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    return float(np.mean([roc_auc_score(y == k, probabilities[:, k]) for k in present]))
