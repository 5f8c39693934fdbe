"""The decision threshold of a binary model, fixed on validation predictions, never on test ones.

Threshold-dependent metrics (accuracy, sensitivity, PPV, ...) are only honest when the
threshold was chosen without the patients they are computed on; choosing it on the test
predictions would inflate them. So a threshold is either given (0.5, or a number the user
fixed in advance) or chosen on validation rows by one of two rules:

- ``youden``: maximise Youden's J = sensitivity + specificity - 1;
- ``sensitivity``: the highest threshold whose sensitivity reaches a target (e.g. 0.9), the
  usual rule for a rule-out test.

A row is predicted positive when ``score >= threshold``, as in scikit-learn's ``roc_curve``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

#: The rules a threshold can come from.
THRESHOLD_METHODS = ("fixed", "youden", "sensitivity")


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and where it came from.

    Attributes
    ----------
    value
        Scores at or above it are predicted positive.
    method
        ``fixed``, ``youden`` or ``sensitivity``.
    n_validation
        Validation rows it was chosen on (0 for a fixed threshold).
    target_sensitivity
        The target of the ``sensitivity`` rule, else None.
    """

    value: float
    method: str
    n_validation: int = 0
    target_sensitivity: float | None = None

    def describe(self) -> str:
        """One sentence for reports, e.g. ``0.42, maximising Youden's J on 40 validation rows``."""
        if self.method == "fixed":
            return f"{self.value:.3g}, fixed in advance (not tuned on any predictions)"
        if self.method == "youden":
            return f"{self.value:.3g}, maximising Youden's J on {self.n_validation} validation rows"
        return f"{self.value:.3g}, the highest reaching sensitivity {self.target_sensitivity:g} on {self.n_validation} validation rows"

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for metrics.json."""
        return {"value": float(self.value), "method": self.method, "n_validation": self.n_validation,
                "target_sensitivity": self.target_sensitivity}


def _finite_roc(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (np.any(y == 1) and np.any(y == 0)):
        raise ValueError("choosing a threshold needs validation rows of both classes")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    # The first threshold of roc_curve is +inf (nothing positive): never a usable choice.
    finite = np.isfinite(thresholds)
    return fpr[finite], tpr[finite], thresholds[finite]


def youden_threshold(labels: ArrayLike, scores: ArrayLike) -> float:
    """The threshold maximising sensitivity + specificity - 1; the highest such on ties.

    Parameters
    ----------
    labels
        Validation labels, 0/1, both classes present.
    scores
        Validation scores.

    Returns
    -------
    float
        One of the validation scores.
    """
    fpr, tpr, thresholds = _finite_roc(labels, scores)
    return float(thresholds[int(np.argmax(tpr - fpr))])  # argmax: first, i.e. highest threshold


def sensitivity_threshold(labels: ArrayLike, scores: ArrayLike, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target``.

    Parameters
    ----------
    labels
        Validation labels, 0/1, both classes present.
    scores
        Validation scores.
    target
        Sensitivity wanted, in (0, 1].

    Returns
    -------
    float
        One of the validation scores (the highest threshold keeps specificity highest).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    _, tpr, thresholds = _finite_roc(labels, scores)
    # tpr increases as the threshold decreases; the last threshold has tpr 1, so one qualifies.
    return float(thresholds[int(np.flatnonzero(tpr >= target)[0])])


def choose_threshold(
    method: str,
    *,
    fixed: float = 0.5,
    validation_labels: ArrayLike | None = None,
    validation_scores: ArrayLike | None = None,
    target_sensitivity: float | None = None,
) -> Threshold:
    """The threshold of ``method``, from validation predictions only.

    Parameters
    ----------
    method
        One of :data:`THRESHOLD_METHODS`.
    fixed
        The threshold of ``fixed``.
    validation_labels, validation_scores
        The rows ``youden`` and ``sensitivity`` choose on (never the test rows).
    target_sensitivity
        The target of ``sensitivity``.

    Returns
    -------
    Threshold
        The value and its provenance.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; use one of {', '.join(THRESHOLD_METHODS)}")
    if method == "fixed":
        return Threshold(float(fixed), "fixed")
    if validation_labels is None or validation_scores is None:
        raise ValueError(f"the {method} threshold needs validation predictions")
    n = len(np.asarray(validation_labels).reshape(-1))
    if method == "youden":
        return Threshold(youden_threshold(validation_labels, validation_scores), "youden", n)
    if target_sensitivity is None:
        raise ValueError("the sensitivity threshold needs a target sensitivity")
    value = sensitivity_threshold(validation_labels, validation_scores, target_sensitivity)
    return Threshold(value, "sensitivity", n, float(target_sensitivity))
