"""Every binary metric bootstrapped over CV repeats, as the run's score stage writes it."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from wsi_pipeline.mil.tasks import BinaryTask
from wsi_pipeline.scoring.binary import BINARY_METRICS, binary_metric_values
from wsi_pipeline.scoring.binary_intervals import binary_intervals
from wsi_pipeline.scoring.bootstrap import bootstrap_task_metrics
from wsi_pipeline.scoring.stage import score_predictions


def data(seed: int = 0, n: int = 50, repeats: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    return y, [1 / (1 + np.exp(-(rng.normal(0, 1, n) + (y - 0.5) * 2))) for _ in range(repeats)]


def test_value_is_the_mean_over_repeats_and_per_repeat_the_metric():
    y, scores = data()
    intervals = binary_intervals(y, scores, 0.5, n_resamples=200)
    assert list(intervals) == list(BINARY_METRICS)
    for name, (interval, per_repeat) in intervals.items():
        expected = [binary_metric_values(y, s, 0.5)[name] for s in scores]
        assert per_repeat == pytest.approx(expected) and interval.value == pytest.approx(np.mean(expected))
        assert interval.ci_low <= interval.value <= interval.ci_high
    assert intervals["f1"][1][0] == pytest.approx(f1_score(y, scores[0] >= 0.5))


def test_same_draws_as_the_task_bootstrap():
    # The stage bootstraps the task's own metrics with bootstrap_task_metrics and the rest here: on the
    # same seed both draw the same patients, so a metric both compute gets the same interval.
    y, scores = data(seed=1)
    ours = binary_intervals(y, scores, 0.5, names=("auc", "accuracy"), n_resamples=100, seed=3)
    tables = [{"label": y, "score": s} for s in scores]
    theirs = bootstrap_task_metrics(tables, BinaryTask().metrics, ("auc", "accuracy"), n_resamples=100, seed=3)
    for name in ("auc", "accuracy"):
        assert (ours[name][0].ci_low, ours[name][0].ci_high) == pytest.approx((theirs[name][0].ci_low, theirs[name][0].ci_high))


def test_the_run_stage_writes_every_binary_metric_per_repeat(tmp_path):
    y, scores = data(n=40)
    table = pd.concat([pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(40)], "model": "abmil", "fold": np.arange(40) % 4,
                                     "repeat": r, "label": y, "score": s}) for r, s in enumerate(scores)])
    with mock.patch("wsi_pipeline.scoring.plots.plot_task"):  # the plot is not under test
        entry = score_predictions(table, tmp_path, n_resamples=100)["abmil"]
    for name in BINARY_METRICS:
        assert entry[name]["per_repeat"] == pytest.approx([binary_metric_values(y, s, 0.5)[name] for s in scores])
