"""Survival scoring: the Cox hazard ratio against the partial likelihood maximised by hand, the cut-off rule,
the C-index against pair counting and the log-rank p of the stage against lifelines' two-group test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from wsi_pipeline.mil.tasks import SurvivalTask
from wsi_pipeline.scoring.stage import score_predictions
from wsi_pipeline.scoring.survival_metrics import hazard_ratio, risk_cutoff


def cohort(n: int = 60, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))  # continuous: no tied times, so Efron = Breslow = the plain likelihood
    event = (rng.random(n) < 0.75).astype(int)
    return time, event, risk + rng.normal(0, 0.7, n)


def log_partial_likelihood(beta: float, time: np.ndarray, event: np.ndarray, x: np.ndarray) -> float:
    """Cox's partial likelihood of one covariate, written out (no ties)."""
    return float(sum(beta * x[i] - np.log(np.exp(beta * x[time >= time[i]]).sum()) for i in np.flatnonzero(event)))


def test_hazard_ratio_is_the_maximum_partial_likelihood_with_its_wald_interval():
    time, event, risk = cohort()
    high = risk >= np.median(risk)
    x = high.astype(float)
    fit = minimize_scalar(lambda b: -log_partial_likelihood(b, time, event, x), bounds=(-5, 5), method="bounded",
                          options={"xatol": 1e-10})
    beta, h = fit.x, 1e-4
    information = -(log_partial_likelihood(beta + h, time, event, x) - 2 * log_partial_likelihood(beta, time, event, x)
                    + log_partial_likelihood(beta - h, time, event, x)) / h**2
    for level in (0.95, 0.8):
        z = norm.ppf(0.5 + level / 2)
        expected = np.exp([beta, beta - z / math.sqrt(information), beta + z / math.sqrt(information)])
        got = hazard_ratio(time, event, high, level=level)
        assert [got["value"], got["ci_low"], got["ci_high"]] == pytest.approx(expected, rel=1e-4)
    assert expected[0] > 1  # the high-risk group does progress sooner


def test_hazard_ratio_is_undefined_without_two_groups_or_events():
    time, event, risk = cohort(10)
    assert hazard_ratio(time, event, np.ones(10, bool))["value"] is None
    assert hazard_ratio(time, np.zeros(10), risk > 0)["value"] is None


def test_cutoff_is_the_validation_median_when_there_are_validation_rows():
    assert risk_cutoff([1, 2, 3, 10]).as_dict()["cutoff"] == 2.5
    cut = risk_cutoff([1, 2, 3, 10], validation_risk=[0.0, 1.0, 4.0])
    assert (cut.value, cut.rule) == (1.0, "validation")
    assert cut.groups([0.5, 1.0, 7.0]).tolist() == [False, True, True]


def test_stage_c_index_hazard_ratio_and_logrank_against_references(tmp_path):
    time, event, risk = cohort(40, seed=2)
    table = pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(40)], "model": "m", "fold": 0, "pfs_months": time,
                          "event": event, "risk": risk})
    entry = score_predictions(table, tmp_path, n_resamples=100, task=SurvivalTask())["m"]
    # Harrell's C by counting pairs: i had the event before j's time; concordant when i's risk is higher.
    comparable = concordant = 0.0
    for i in np.flatnonzero(event):
        for j in np.flatnonzero(time > time[i]):
            comparable += 1
            concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert entry["c_index"]["value"] == pytest.approx(concordant / comparable)
    high = risk >= np.median(risk)
    assert entry["logrank_p"]["value"] == pytest.approx(logrank_test(time[high], time[~high], event[high], event[~high]).p_value)
    assert entry["hazard_ratio"] == pytest.approx(hazard_ratio(time, event, high))
    assert entry["risk_groups"]["rule"] == "median" and entry["risk_groups"]["cutoff"] == pytest.approx(np.median(risk))
    report = (tmp_path / "report.md").read_text()
    assert "Cox" in report and "not a bootstrap" in report and "median predicted risk of the scored rows" in report
    assert (tmp_path / "plots" / "km_m.png").is_file()


def test_logrank_p_with_repeats_is_the_median_of_each_repeats_p(tmp_path):
    time, event, _ = cohort(40, seed=3)
    rng = np.random.default_rng(5)
    frames, expected = [], []
    for repeat in range(3):
        risk = rng.normal(size=40) - 0.02 * time  # each repeat's model ranks the patients differently
        frames.append(pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(40)], "model": "m", "fold": 0, "repeat": repeat,
                                    "pfs_months": time, "event": event, "risk": risk}))
        high = risk >= np.median(risk)
        expected.append(logrank_test(time[high], time[~high], event[high], event[~high]).p_value)
    entry = score_predictions(pd.concat(frames), tmp_path, n_resamples=50, task=SurvivalTask())["m"]
    assert entry["logrank_p"]["per_repeat"] == pytest.approx(expected)
    assert entry["logrank_p"]["value"] == pytest.approx(np.median(expected))
    assert entry["logrank_p"]["ci_low"] is None and entry["logrank_p"]["ci_high"] is None
