"""The full set of binary-classification metrics, computed for many bootstrap resamples at once.

Every function takes the labels and scores of the rows once and a weight matrix of shape
(resamples, rows): row ``i`` counts ``weights[b, i]`` times in resample ``b``
(:mod:`wsi_pipeline.scoring.resample`). A row of ones is the full data, so the point estimate
and the bootstrap share one code path. With integer weights each metric equals scikit-learn's
on the rows repeated that many times (the tests check this); computing them as weighted sums
instead of 1,000 calls to scikit-learn per metric keeps a full bootstrap well under a second.

A metric is NaN where it is undefined: AUC, balanced accuracy, sensitivity and specificity
when a class is absent, PPV when nothing is predicted positive, NPV when nothing is predicted
negative, F1 when there are neither positives nor predicted positives.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.calibration import DEFAULT_BINS, brier_weighted, ece_weighted

#: The binary metrics of metrics.json, in report order.
BINARY_METRICS: tuple[str, ...] = (
    "auc", "average_precision", "accuracy", "balanced_accuracy", "f1", "sensitivity", "specificity", "ppv", "npv",
    "brier", "ece",
)
#: How a report names each metric.
BINARY_LABELS: dict[str, str] = {
    "auc": "AUC-ROC", "average_precision": "Average precision", "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy", "f1": "F1", "sensitivity": "Sensitivity", "specificity": "Specificity",
    "ppv": "PPV", "npv": "NPV", "brier": "Brier score", "ece": "Expected calibration error",
}
#: Metrics that do not depend on the decision threshold.
THRESHOLD_FREE: frozenset[str] = frozenset({"auc", "average_precision", "brier", "ece"})


def _prepare(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have equal length, got {y.shape} and {s.shape}")
    w = np.ones((1, y.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.shape[1] != y.size:
        raise ValueError(f"weights must have shape (resamples, {y.size}), got {w.shape}")
    return y, s, w


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _class_weights_by_score(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted positives and negatives at each distinct score, scores ascending: two (B, G) arrays."""
    order = np.argsort(s, kind="stable")
    sorted_scores = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ws, ys = w[:, order], y[order]
    positives = np.add.reduceat(ws * ys, starts, axis=1)
    negatives = np.add.reduceat(ws * (1.0 - ys), starts, axis=1)
    return positives, negatives


def auc_weighted(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
    """Area under the ROC curve of each resample (the Mann-Whitney statistic, ties count 1/2).

    Parameters
    ----------
    labels
        0/1 per row.
    scores
        Predicted probability (or any score) of class 1 per row.
    weights
        (B, rows) counts; default one resample of weight 1.

    Returns
    -------
    numpy.ndarray
        (B,) AUCs, NaN where a resample lacks a class.
    """
    y, s, w = _prepare(labels, scores, weights)
    if y.size == 0:
        return np.full(w.shape[0], np.nan)
    pos, neg = _class_weights_by_score(y, s, w)
    negatives_below = np.cumsum(neg, axis=1) - neg
    concordant = (pos * (negatives_below + 0.5 * neg)).sum(axis=1)
    return _ratio(concordant, pos.sum(axis=1) * neg.sum(axis=1))


def average_precision_weighted(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
    """Average precision of each resample: sum over score thresholds of the recall gained times the precision.

    Follows scikit-learn's ``average_precision_score`` (no interpolation; tied scores form one
    threshold). Same parameters as :func:`auc_weighted`.

    Returns
    -------
    numpy.ndarray
        (B,) average precisions, NaN where a resample holds no positive.
    """
    y, s, w = _prepare(labels, scores, weights)
    if y.size == 0:
        return np.full(w.shape[0], np.nan)
    pos, neg = _class_weights_by_score(y, s, w)
    pos, neg = pos[:, ::-1], neg[:, ::-1]  # thresholds from the highest score down
    true_pos = np.cumsum(pos, axis=1)
    precision = _ratio(true_pos, true_pos + np.cumsum(neg, axis=1))
    # A threshold adding no positive adds no recall: its (possibly undefined) precision does not count.
    gained = np.where(pos > 0, pos * np.nan_to_num(precision), 0.0)
    return _ratio(gained.sum(axis=1), pos.sum(axis=1))


def confusion_weighted(labels: ArrayLike, scores: ArrayLike, threshold: float, weights: ArrayLike | None = None) -> dict[str, np.ndarray]:
    """Weighted true/false positives/negatives of ``score >= threshold``, each of shape (B,).

    Returns
    -------
    dict
        ``{"tp", "fp", "tn", "fn"}``.
    """
    y, s, w = _prepare(labels, scores, weights)
    predicted = (s >= threshold).astype(np.float64)
    return {
        "tp": w @ (y * predicted), "fp": w @ ((1 - y) * predicted),
        "tn": w @ ((1 - y) * (1 - predicted)), "fn": w @ (y * (1 - predicted)),
    }


def threshold_metrics(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, F1, sensitivity, specificity, PPV and NPV from confusion counts.

    Parameters
    ----------
    counts
        ``{"tp", "fp", "tn", "fn"}`` (:func:`confusion_weighted`).

    Returns
    -------
    dict
        Each metric as an array like the counts; NaN where undefined (see the module docstring).
    """
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "f1": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def binary_metric_arrays(
    labels: ArrayLike, scores: ArrayLike, threshold: float, weights: ArrayLike | None = None, *, n_bins: int = DEFAULT_BINS
) -> dict[str, np.ndarray]:
    """Every metric of :data:`BINARY_METRICS` for each resample.

    Parameters
    ----------
    labels
        0/1 per row.
    scores
        Predicted probability of class 1 per row, in [0, 1].
    threshold
        Rows with ``score >= threshold`` are predicted positive.
    weights
        (B, rows) counts; default one resample of weight 1 (the full data).
    n_bins
        Equal-width probability bins of the expected calibration error.

    Returns
    -------
    dict
        Metric name -> (B,) values, NaN where undefined.
    """
    y, s, w = _prepare(labels, scores, weights)
    values = {
        "auc": auc_weighted(y, s, w),
        "average_precision": average_precision_weighted(y, s, w),
        **threshold_metrics(confusion_weighted(y, s, threshold, w)),
        "brier": brier_weighted(y, s, w),
        "ece": ece_weighted(y, s, w, n_bins=n_bins),
    }
    return {name: values[name] for name in BINARY_METRICS}


def binary_metric_values(labels: ArrayLike, scores: ArrayLike, threshold: float, *, n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """Every metric of :data:`BINARY_METRICS` on the given rows (point estimates).

    Examples
    --------
    >>> round(binary_metric_values([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5)["auc"], 3)
    0.75
    """
    return {name: float(v[0]) for name, v in binary_metric_arrays(labels, scores, threshold, n_bins=n_bins).items()}
