"""The weighted regression metrics against scikit-learn and SciPy on explicit rows; the task bootstrap's intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from wsi_pipeline.mil.tasks import RegressionTask
from wsi_pipeline.scoring.bootstrap import bootstrap_task_metrics
from wsi_pipeline.scoring.regression_metrics import (
    REGRESSION_METRICS,
    regression_intervals,
    regression_metric_arrays,
)
from wsi_pipeline.scoring.resample import group_codes, resample_weights


def test_every_metric_equals_scikit_learn_and_scipy_on_each_resample():
    rng = np.random.default_rng(2)
    n = 50
    y = np.round(rng.normal(10, 3, n))  # rounded: tied targets and predictions, as Spearman's ranks must handle
    p = np.round(y + rng.normal(0, 2, n))
    weights = resample_weights(group_codes(None, n), 8, rng)
    arrays = regression_metric_arrays(y, p, weights)
    assert list(arrays) == list(REGRESSION_METRICS)
    for b in range(len(weights)):
        rows = np.repeat(np.arange(n), weights[b].astype(int))
        expected = {"mae": mean_absolute_error(y[rows], p[rows]), "rmse": math.sqrt(mean_squared_error(y[rows], p[rows])),
                    "r2": r2_score(y[rows], p[rows]), "pearson": pearsonr(y[rows], p[rows]).statistic,
                    "spearman": spearmanr(y[rows], p[rows]).statistic}
        for name, value in expected.items():
            assert arrays[name][b] == pytest.approx(value, abs=1e-12), (b, name)


def test_constant_targets_or_predictions_leave_r2_and_correlations_undefined():
    got = regression_metric_arrays([3.0, 3.0, 3.0], [1.0, 2.0, 4.0])
    assert [math.isnan(got[n][0]) for n in ("r2", "pearson", "spearman")] == [True] * 3
    assert got["mae"][0] == pytest.approx(4 / 3)
    got = regression_metric_arrays([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert got["r2"][0] == pytest.approx(r2_score([1, 2, 4], [2, 2, 2])) and math.isnan(got["spearman"][0])


def test_intervals_are_the_task_bootstraps():
    rng = np.random.default_rng(4)
    y = rng.normal(size=30)
    p = y + rng.normal(0, 1, 30)
    table = {"target": y, "prediction": p}
    reference = bootstrap_task_metrics([table], RegressionTask().metrics, REGRESSION_METRICS, n_resamples=100, seed=7)
    ours = regression_intervals(y, [p], n_resamples=100, seed=7)
    for name in REGRESSION_METRICS:
        a, b = ours[name][0], reference[name][0]
        assert (a.value, a.ci_low, a.ci_high) == pytest.approx((b.value, b.ci_low, b.ci_high)), name
