"""Point estimates of binary-classification metrics, computed with scikit-learn.

Each metric is a function ``(labels, scores, threshold) -> float`` that returns ``nan`` when
the metric is undefined on the given patients (e.g. AUC with one class only). Returning
``nan`` instead of raising lets the bootstrap recognise and redraw such resamples.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

#: Metric names, in the order they appear in metrics.json and the report.
METRIC_NAMES: tuple[str, ...] = ("auc", "accuracy", "balanced_accuracy")

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _as_arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    return y.astype(int), s


def _has_both_classes(y: np.ndarray) -> bool:
    return bool(np.any(y == 0) and np.any(y == 1))


def auc(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> float:
    """Area under the ROC curve; ``nan`` if only one class is present.

    Parameters
    ----------
    labels
        True labels, 0/1, one per patient.
    scores
        Predicted probability of class 1, one per patient.
    threshold
        Unused (AUC is threshold-free); accepted so all metrics share one signature.

    Returns
    -------
    float
        The AUC, or ``nan`` when undefined.
    """
    y, s = _as_arrays(labels, scores)
    # Checked here rather than relying on scikit-learn, whose behaviour for one class has
    # changed between versions (raise vs. warn-and-nan).
    if not _has_both_classes(y):
        return float("nan")
    return float(roc_auc_score(y, s))


def accuracy(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> float:
    """Fraction of patients whose predicted class (``score >= threshold``) equals the label.

    Parameters
    ----------
    labels
        True labels, 0/1.
    scores
        Predicted probability of class 1.
    threshold
        Scores at or above it are predicted class 1.

    Returns
    -------
    float
        The accuracy, or ``nan`` for zero patients.
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return float("nan")
    return float(accuracy_score(y, (s >= threshold).astype(int)))


def balanced_accuracy(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity at ``threshold``; ``nan`` if one class is absent.

    Parameters
    ----------
    labels
        True labels, 0/1.
    scores
        Predicted probability of class 1.
    threshold
        Scores at or above it are predicted class 1.

    Returns
    -------
    float
        The balanced accuracy, or ``nan`` when undefined.
    """
    y, s = _as_arrays(labels, scores)
    # With one class, scikit-learn returns that class's recall alone (with a warning): that
    # is not a balanced accuracy, so we call it undefined.
    if not _has_both_classes(y):
        return float("nan")
    return float(balanced_accuracy_score(y, (s >= threshold).astype(int)))


_METRICS: dict[str, Callable[..., float]] = {
    "auc": auc,
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
}


def metric_function(name: str, threshold: float = 0.5) -> MetricFn:
    """Return the metric ``name`` as a function ``(labels, scores) -> float``.

    Parameters
    ----------
    name
        One of :data:`METRIC_NAMES`.
    threshold
        Decision threshold bound into threshold-dependent metrics.

    Returns
    -------
    callable
        ``f(labels, scores) -> float`` (``nan`` when undefined).
    """
    try:
        fn = _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}") from None
    return partial(fn, threshold=threshold)


def binary_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Compute AUC, accuracy and balanced accuracy on one set of patients.

    Parameters
    ----------
    labels
        True labels, 0/1, one per patient.
    scores
        Predicted probability of class 1, one per patient.
    threshold
        Scores at or above it are predicted class 1 (accuracy, balanced accuracy).

    Returns
    -------
    dict[str, float]
        ``{"auc", "accuracy", "balanced_accuracy"}``; a value is ``nan`` when undefined
        (e.g. AUC when every patient has the same label).

    Examples
    --------
    >>> binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])["auc"]
    0.75
    """
    return {name: metric_function(name, threshold)(labels, scores) for name in METRIC_NAMES}
