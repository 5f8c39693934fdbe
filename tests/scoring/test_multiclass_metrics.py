"""The weighted multiclass metrics against scikit-learn on explicit rows; intervals; the confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from wsi_pipeline.mil.tasks import MulticlassTask
from wsi_pipeline.scoring.bootstrap import bootstrap_task_metrics
from wsi_pipeline.scoring.multiclass_metrics import (
    confusion_entry,
    metric_names,
    multiclass_intervals,
    multiclass_metric_arrays,
)
from wsi_pipeline.scoring.resample import group_codes, resample_weights

CLASSES = ["a", "b", "c"]


def data(n: int = 60, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.5, 0.35, 0.15])
    logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y]
    # Rounded: ties of probabilities within and across classes.
    prob = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 1)
    return y, prob.argmax(axis=1), prob


def sklearn_metrics(y: np.ndarray, p: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """The same metrics computed another way: scikit-learn on the rows."""
    labels = np.arange(3)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=np.nan)
    present = np.unique(y)
    out = {
        "macro_f1": skm.f1_score(y, p, average="macro", zero_division=0),
        "balanced_accuracy": skm.balanced_accuracy_score(y, p) if len(present) > 1 else math.nan,
        "accuracy": skm.accuracy_score(y, p),
        # Rows of ``prob`` sum to 1 (the test renormalises once), as scikit-learn's multiclass AUC requires.
        "macro_auc": (skm.roc_auc_score(y, prob, multi_class="ovr") if len(present) == 3
                      else np.mean([skm.roc_auc_score(y == c, prob[:, c]) for c in present])),
    }
    for c, name in enumerate(CLASSES):
        out[f"precision_{name}"] = precision[c]
        out[f"recall_{name}"] = recall[c]
        # scikit-learn scores F1 0 when a class is in the labels or predictions but never hit; undefined when in neither.
        out[f"f1_{name}"] = f1[c] if support[c] or (p == c).any() else math.nan
        out[f"auc_{name}"] = skm.roc_auc_score(y == c, prob[:, c]) if 0 < (y == c).sum() < len(y) else math.nan
    return out


def test_every_metric_equals_scikit_learn_on_each_resample():
    y, p, prob = data()
    # Rows renormalised where sklearn's multiclass AUC needs rows summing to 1; the OvR AUC of a
    # class only depends on the order of its own column, so this changes nothing.
    prob = prob / prob.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    weights = resample_weights(group_codes(None, len(y)), 8, rng)
    arrays = multiclass_metric_arrays(y, p, prob, CLASSES, weights)
    assert list(arrays) == metric_names(CLASSES)
    for b in range(len(weights)):
        rows = np.repeat(np.arange(len(y)), weights[b].astype(int))
        expected = sklearn_metrics(y[rows], p[rows], prob[rows])
        for name, value in expected.items():
            assert arrays[name][b] == pytest.approx(value, nan_ok=True, abs=1e-12), (b, name)


def test_undefined_per_class_metrics_are_nan_and_the_means_skip_them():
    # Class c is neither a label nor predicted; class b is a label but never predicted.
    y = np.array([0, 0, 1, 1, 0])
    p = np.array([0, 0, 0, 0, 0])
    prob = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0], [0.5, 0.5, 0.0]])
    got = {k: float(v[0]) for k, v in multiclass_metric_arrays(y, p, prob, CLASSES).items()}
    assert math.isnan(got["precision_b"]) and got["recall_b"] == 0.0 and got["f1_b"] == 0.0
    assert math.isnan(got["f1_c"]) and math.isnan(got["recall_c"]) and math.isnan(got["auc_c"])
    # By hand: F1 of a = 2*3/(3+5) = 0.75, b = 0 -> macro 0.375; recalls 1 and 0 -> balanced accuracy 0.5.
    assert got["macro_f1"] == pytest.approx(0.375) and got["balanced_accuracy"] == pytest.approx(0.5)
    assert got["accuracy"] == pytest.approx(0.6)
    # AUC of b vs rest: b's scores 0.4, 0.3 against 0.1, 0.2, 0.5 -> 4 of 6 pairs; AUC of a the same pairs: 4/6.
    assert got["auc_b"] == pytest.approx(4 / 6) and got["macro_auc"] == pytest.approx(4 / 6)


def test_shared_metrics_have_the_task_bootstraps_interval():
    y, p, prob = data(40)
    task = MulticlassTask().bind({"label": np.array(CLASSES, dtype=object)[y]})
    table = {"label": np.array(CLASSES, dtype=object)[y], "predicted": np.array(CLASSES, dtype=object)[p],
             **{f"prob_{c}": prob[:, k] for k, c in enumerate(CLASSES)}}
    names = ["macro_f1", "balanced_accuracy", "accuracy", "macro_auc"]
    reference = bootstrap_task_metrics([table], task.metrics, names, n_resamples=100, seed=5)
    ours = multiclass_intervals(y, [p], [prob], CLASSES, names=names, n_resamples=100, seed=5)
    for name in names:
        a, b = ours[name][0], reference[name][0]
        assert (a.value, a.ci_low, a.ci_high) == pytest.approx((b.value, b.ci_low, b.ci_high)), name


def test_confusion_matrix_counts_and_row_normalised():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 1, 0, 1, 1, 2, 0, 2, 1])
    entry = confusion_entry(y, p, CLASSES)
    assert entry["counts"] == skm.confusion_matrix(y, p).tolist()
    assert np.allclose(entry["normalised"], skm.confusion_matrix(y, p, normalize="true"))
    assert confusion_entry(np.array([0, 1]), np.array([0, 0]), CLASSES)["normalised"][2] == [None, None, None]
