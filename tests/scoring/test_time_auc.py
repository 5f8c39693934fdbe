"""Time-dependent (cumulative/dynamic) AUC: a hand-worked example, the plain ROC AUC without censoring, resample weights, the stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from wsi_pipeline.scoring.inputs import Columns
from wsi_pipeline.scoring.resample import group_codes, resample_weights
from wsi_pipeline.scoring.standalone import ScoringSettings, score_files
from wsi_pipeline.scoring.time_auc import censoring_survival_before, time_auc_weighted


def test_hand_worked_example_with_censoring_weights():
    # Censored at 2 (5 at risk) and at 5 (2 at risk): G = 1 before 2, 0.8 from 2, 0.4 from 5.
    # At t = 3.5 the cases are rows 1 (T=1, weight 1/G(1-) = 1) and 3 (T=3, weight 1/G(3-) = 1.25); row 2, censored
    # before t, is neither; the controls are rows 4-6 (risks 0.8, 0.1, 0.3). Row 1 (0.9) beats all three controls,
    # row 3 (0.4) beats two: AUC = (1*3 + 1.25*2) / ((1 + 1.25) * 3) = 5.5 / 6.75.
    time, event, risk = [1, 2, 3, 4, 5, 6], [1, 0, 1, 1, 0, 1], [0.9, 0.5, 0.4, 0.8, 0.1, 0.3]
    assert censoring_survival_before(np.array(time, float), np.array(event, float), np.ones((1, 6)))[0].tolist() == \
        pytest.approx([1, 1, 0.8, 0.8, 0.8, 0.4])
    assert time_auc_weighted(time, event, risk, 3.5)[0] == pytest.approx(5.5 / 6.75)
    # A tie between a case and a control counts one half: row 3's risk equal to a control's (0.3).
    assert time_auc_weighted(time, event, [0.9, 0.5, 0.3, 0.8, 0.1, 0.3], 3.5)[0] == pytest.approx((3 + 1.25 * 1.5) / 6.75)


def test_without_censoring_before_t_it_is_the_roc_auc_of_an_event_by_t():
    rng = np.random.default_rng(0)
    time = rng.exponential(10, 80)
    risk = -time + rng.normal(0, 8, 80)
    event = np.where(time > 12, rng.integers(0, 2, 80), 1)  # censoring only after the horizon
    assert time_auc_weighted(time, event, risk, 12.0)[0] == pytest.approx(roc_auc_score(time <= 12, risk))


def test_resample_weights_equal_the_rows_repeated():
    rng = np.random.default_rng(1)
    time = np.round(rng.exponential(10, 40), 1)
    event = rng.integers(0, 2, 40)
    risk = rng.normal(size=40)
    weights = resample_weights(group_codes(None, 40), 5, rng)
    got = time_auc_weighted(time, event, risk, 8.0, weights)
    for b in range(5):
        rows = np.repeat(np.arange(40), weights[b].astype(int))
        assert got[b] == pytest.approx(time_auc_weighted(time[rows], event[rows], risk[rows], 8.0)[0], nan_ok=True)


def test_standalone_survival_reports_the_auc_at_each_horizon(tmp_path):
    rng = np.random.default_rng(2)
    n = 40
    risk = rng.normal(size=n)
    ids = [f"P{i}" for i in range(n)]
    pd.DataFrame({"patient_id": ids, "time": rng.exponential(np.exp(-risk)), "event": (rng.random(n) < 0.8).astype(int)}).to_csv(
        tmp_path / "t.csv", index=False)
    pd.DataFrame({"patient_id": ids, "score": risk}).to_csv(tmp_path / "p.csv", index=False)
    entry = score_files(tmp_path / "p.csv", tmp_path / "t.csv", "survival", tmp_path / "o", columns=Columns(),
                        settings=ScoringSettings(n_resamples=100, time_auc_horizons=(0.5, 1.0)))["p"]
    truth = pd.read_csv(tmp_path / "t.csv")
    for horizon in (0.5, 1.0):
        got = entry[f"td_auc_{horizon:g}"]
        assert got["value"] == pytest.approx(time_auc_weighted(truth["time"], truth["event"], risk, horizon)[0])
        assert got["ci_low"] <= got["value"] <= got["ci_high"]
    assert "AUC(t = 0.5)" in (tmp_path / "o" / "report.md").read_text()
