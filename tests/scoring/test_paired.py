"""The paired test of two models from different runs: shared patients only, DeLong or bootstrap, refused on differing truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wsi_pipeline.mil.tasks.registry import build_task
from wsi_pipeline.scoring.binary import binary_metric_values
from wsi_pipeline.scoring.delong import delong_test
from wsi_pipeline.scoring.paired import BOOTSTRAP, DELONG, paired_metric_test
from wsi_pipeline.scoring.predictions import validate_predictions

BINARY = build_task({"type": "binary"})


def table(ids: list[str], labels: np.ndarray, scores: np.ndarray, repeats: int = 1) -> pd.DataFrame:
    rows = [pd.DataFrame({"patient_id": ids, "model": "m", "repeat": r, "fold": 0, "label": labels, "score": np.roll(scores, r)})
            for r in range(repeats)]
    return validate_predictions(pd.concat(rows, ignore_index=True), task=BINARY)


@pytest.fixture()
def cohorts():
    # Run a scored P00..P39, run b P10..P49: 30 patients in common, with the same labels.
    rng = np.random.default_rng(3)
    labels = np.arange(50) % 2
    good = 1 / (1 + np.exp(-(rng.normal(0, 1, 50) + 2.5 * (labels - 0.5))))
    poor = 1 / (1 + np.exp(-rng.normal(0, 1, 50)))
    ids = [f"P{i:02d}" for i in range(50)]
    return ids, labels, good, poor


def test_delong_on_exactly_the_shared_patients(cohorts):
    ids, labels, good, poor = cohorts
    a, b = table(ids[:40], labels[:40], good[:40]), table(ids[10:], labels[10:], poor[10:])
    result = paired_metric_test(a, b, BINARY, BINARY, "auc", n_resamples=200)
    shared = slice(10, 40)
    expected = delong_test(labels[shared], good[shared], poor[shared])
    assert (result.test, result.n_patients) == (DELONG, 30)
    assert result.p_value == pytest.approx(expected.p_value) and result.delong_p == result.p_value
    assert result.difference["value"] == pytest.approx(expected.auc_a - expected.auc_b)
    assert result.difference["value"] > 0 and result.bootstrap_p is not None and result.refused is None


def test_repeats_use_the_paired_bootstrap_of_the_mean_over_repeats(cohorts):
    ids, labels, good, poor = cohorts
    a, b = table(ids, labels, good, repeats=2), table(ids, labels, poor)
    result = paired_metric_test(a, b, BINARY, BINARY, "f1", n_resamples=200)
    mean_f1 = np.mean([binary_metric_values(labels, np.roll(good, r), 0.5)["f1"] for r in (0, 1)])
    assert result.test == BOOTSTRAP and result.delong_p is None and result.n_patients == 50
    assert result.difference["value"] == pytest.approx(mean_f1 - binary_metric_values(labels, poor, 0.5)["f1"])
    assert result.difference["ci_low"] < result.difference["value"] < result.difference["ci_high"]
    assert 0 < result.p_value <= 1


def test_a_shared_patient_with_another_label_refuses_the_pairing(cohorts):
    ids, labels, good, poor = cohorts
    relabelled = labels.copy()
    relabelled[[12, 20]] = 1 - relabelled[[12, 20]]
    result = paired_metric_test(table(ids[:40], labels[:40], good[:40]), table(ids[10:], relabelled[10:], poor[10:]),
                                BINARY, BINARY, "auc")
    assert result.test is None and result.p_value is None and result.n_patients == 30
    assert result.refused.startswith("the truth differs for 2 of the 30 shared patients (P12, P20)")


def test_no_shared_patient_or_an_unknown_metric_is_refused(cohorts):
    ids, labels, good, poor = cohorts
    apart = paired_metric_test(table(ids[:20], labels[:20], good[:20]), table(ids[20:], labels[20:], poor[20:]), BINARY, BINARY, "auc")
    assert (apart.n_patients, apart.refused) == (0, "no patient scored by both")
    regression = build_task({"type": "regression"})
    rows = validate_predictions(pd.DataFrame({"patient_id": ids[:5], "model": "m", "fold": 0, "target": np.arange(5.0),
                                              "prediction": np.arange(5.0)}), task=regression)
    assert paired_metric_test(rows, rows, regression, regression, "brier").refused == "no paired test of brier for a regression task"
