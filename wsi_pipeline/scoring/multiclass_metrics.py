"""The multiclass metric set, computed for many bootstrap resamples at once, and the confusion matrix.

As in :mod:`wsi_pipeline.scoring.binary`, every function takes the rows once and a weight
matrix of shape (resamples, rows) (:mod:`wsi_pipeline.scoring.resample`); a row of ones is the
full data. With integer weights each value equals scikit-learn's on the rows repeated that many
times (the tests check it against ``precision_recall_fscore_support``, ``f1_score``,
``balanced_accuracy_score`` and ``roc_auc_score``). One weighted confusion matrix per resample
gives every threshold metric; the one-vs-rest AUCs reuse the binary weighted AUC.

Metrics (``<c>`` is a class name):

- ``accuracy``; ``balanced_accuracy``: mean recall over the classes present among the labels
  (NaN with fewer than two); ``macro_f1``: mean F1 over the classes among labels or
  predictions, a class never predicted scoring 0 (scikit-learn's ``zero_division=0``);
  ``macro_auc``: mean one-vs-rest AUC over the classes present (NaN with fewer than two).
- per class: ``precision_<c>`` (NaN when the class is never predicted), ``recall_<c>`` (NaN
  when it is absent from the labels), ``f1_<c>`` (NaN when absent from both), ``auc_<c>``
  (one-vs-rest; NaN when the class is absent or the only one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from wsi_pipeline.scoring.binary import auc_weighted
from wsi_pipeline.scoring.binary_intervals import interval_entry
from wsi_pipeline.scoring.bootstrap import Interval
from wsi_pipeline.scoring.resample import bootstrap_weighted

#: The per-class metrics, each reported as ``<name>_<class>``.
PER_CLASS_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "auc")
#: The metrics over all classes, in report order.
OVERALL_METRICS: tuple[str, ...] = ("macro_f1", "balanced_accuracy", "accuracy", "macro_auc")
#: metrics.json's key of each model's confusion matrix (not a metric).
CONFUSION_KEY = "confusion"


def metric_names(classes: Sequence[str]) -> list[str]:
    """Every metric name for these classes: the overall ones, then per class (precision, recall, F1, AUC)."""
    return [*OVERALL_METRICS, *(f"{m}_{c}" for c in classes for m in PER_CLASS_METRICS)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_where(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row means of ``values`` over the entries where ``keep`` (NaN for a row that keeps none)."""
    counts = keep.sum(axis=1)
    totals = np.where(keep, np.nan_to_num(values), 0.0).sum(axis=1)
    return _ratio(totals, counts.astype(np.float64))


def multiclass_metric_arrays(
    labels: ArrayLike,
    predicted: ArrayLike,
    probabilities: ArrayLike,
    classes: Sequence[str],
    weights: ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """Every multiclass metric (see the module docstring) of each resample.

    Parameters
    ----------
    labels
        True class index (0 .. K-1) per row.
    predicted
        Predicted class index per row.
    probabilities
        (rows, K): each class's predicted probability.
    classes
        The K class names (the keys' suffixes).
    weights
        (B, rows) counts; default one resample of weight 1.

    Returns
    -------
    dict
        Name (:func:`metric_names`) -> values, shape (B,), NaN where undefined.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(predicted, dtype=np.int64).reshape(-1)
    prob = np.asarray(probabilities, dtype=np.float64)
    k = len(classes)
    if p.shape != y.shape or prob.shape != (y.size, k):
        raise ValueError(f"labels {y.shape}, predicted {p.shape} and probabilities {prob.shape} do not fit {k} classes")
    w = np.ones((1, y.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    # One weighted confusion matrix per resample: cell (true i, predicted j) is column i*K + j.
    cells = np.zeros((y.size, k * k))
    cells[np.arange(y.size), y * k + p] = 1.0
    confusion = (w @ cells).reshape(-1, k, k)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    true_counts = confusion.sum(axis=2)
    predicted_counts = confusion.sum(axis=1)
    precision = _ratio(hits, predicted_counts)
    recall = _ratio(hits, true_counts)
    f1 = _ratio(2.0 * hits, true_counts + predicted_counts)
    present = true_counts > 0
    two_classes = present.sum(axis=1) >= 2
    auc = np.column_stack([auc_weighted(y == c, prob[:, c], w) for c in range(k)])
    out = {
        "macro_f1": _mean_where(f1, true_counts + predicted_counts > 0),
        "balanced_accuracy": np.where(two_classes, _mean_where(recall, present), np.nan),
        "accuracy": _ratio(hits.sum(axis=1), true_counts.sum(axis=1)),
        "macro_auc": np.where(two_classes, _mean_where(auc, present), np.nan),
    }
    for c, name in enumerate(classes):
        out[f"precision_{name}"] = precision[:, c]
        out[f"recall_{name}"] = recall[:, c]
        out[f"f1_{name}"] = f1[:, c]
        out[f"auc_{name}"] = auc[:, c]
    return out


def multiclass_intervals(
    labels: ArrayLike,
    predicted: Sequence[ArrayLike],
    probabilities: Sequence[ArrayLike],
    classes: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[Interval, list[float]]]:
    """Patient-bootstrap intervals of multiclass metrics, each the mean over repeats.

    The same draws as :func:`~wsi_pipeline.scoring.binary_intervals.binary_intervals` and
    :func:`~wsi_pipeline.scoring.bootstrap.bootstrap_task_metrics` with the same seed: one draw
    of patients per resample, applied to every repeat.

    Parameters
    ----------
    labels
        True class index per row (the same in every repeat).
    predicted, probabilities
        One array per repeat: predicted class index per row; (rows, K) probabilities.
    classes
        The class names.
    names
        The metrics wanted; default all (:func:`metric_names`).
    groups
        Patient of each row (the resampling unit); default one row per patient.
    n_resamples, level, seed
        Bootstrap settings.

    Returns
    -------
    dict
        Metric name -> (interval of the mean over repeats, the metric on each repeat).
    """
    names = list(names) if names is not None else metric_names(classes)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    repeats = list(zip(predicted, probabilities, strict=True))
    if not repeats:
        raise ValueError("multiclass_intervals needs at least one repeat")

    def mean_over_repeats(weights: np.ndarray) -> dict[str, np.ndarray]:
        values = [multiclass_metric_arrays(y, p, prob, classes, weights) for p, prob in repeats]
        return {name: np.mean([v[name] for v in values], axis=0) for name in names}

    draws = bootstrap_weighted(mean_over_repeats, y.size, groups=groups, n_resamples=n_resamples, seed=seed)
    per_repeat = [multiclass_metric_arrays(y, p, prob, classes) for p, prob in repeats]
    return {name: (draws.interval(name, level), [float(v[name][0]) for v in per_repeat]) for name in names}


def confusion_entry(labels: ArrayLike, predicted: ArrayLike, classes: Sequence[str]) -> dict[str, Any]:
    """metrics.json's confusion matrix: rows are true classes, columns predicted ones.

    Parameters
    ----------
    labels, predicted
        True and predicted class index per row.
    classes
        The class names, in index order.

    Returns
    -------
    dict
        ``classes``; ``counts`` (rows of integers); ``normalised``: each row divided by its
        total, the recall of each true class on the diagonal (``None`` for a class absent
        from the labels).
    """
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64),
                              labels=np.arange(len(classes)))
    totals = counts.sum(axis=1)
    normalised = [[float(v) / total for v in row] if total else [None] * len(classes) for row, total in zip(counts, totals)]
    return {"classes": list(classes), "counts": counts.astype(int).tolist(), "normalised": normalised}


def class_indices(values: ArrayLike, classes: Sequence[str]) -> np.ndarray:
    """Index of each value's class (values compared as the task's class keys)."""
    from wsi_pipeline.mil.tasks.multiclass import class_key

    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[class_key(v)] for v in np.asarray(values, dtype=object)], dtype=np.int64)


def multiclass_extras(
    repeats: Sequence[Any],
    label_column: str,
    classes: Sequence[str],
    skip: Sequence[str],
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """metrics.json entries of the multiclass metrics a task does not report itself, and the confusion matrix.

    Parameters
    ----------
    repeats
        One table per repeat (``label_column``, ``prob_<class>``, ``predicted``), rows aligned.
    label_column
        The label column.
    classes
        The task's classes.
    skip
        Metrics already computed (the task's own).
    groups, n_resamples, level, seed
        As for :func:`multiclass_intervals`.

    Returns
    -------
    dict
        Metric name -> entry (``{"value", "ci_low", "ci_high"}``, + ``per_repeat``), then
        :data:`CONFUSION_KEY` -> :func:`confusion_entry` of the first repeat.
    """
    names = [name for name in metric_names(classes) if name not in skip]
    y = class_indices(repeats[0][label_column], classes)
    predicted = [class_indices(r["predicted"], classes) for r in repeats]
    probabilities = [np.column_stack([np.asarray(r[f"prob_{c}"], dtype=np.float64) for c in classes]) for r in repeats]
    intervals = multiclass_intervals(y, predicted, probabilities, classes, names=names, groups=groups,
                                     n_resamples=n_resamples, level=level, seed=seed)
    entries: dict[str, Any] = {name: interval_entry(*intervals[name]) for name in names}
    entries[CONFUSION_KEY] = confusion_entry(y, predicted[0], classes)
    return entries
