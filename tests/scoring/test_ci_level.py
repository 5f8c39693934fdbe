"""scoring.ci_level reaches the run's score stage: the intervals and the report's wording follow it."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.stage import score_predictions


def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    return pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(60)], "model": "abmil", "fold": np.arange(60) % 5,
                         "label": y, "score": 1 / (1 + np.exp(-(rng.normal(0, 1, 60) + (y - 0.5) * 2)))})


def test_ci_level_narrows_the_interval_and_names_itself(tmp_path):
    # The ROC title's level is plot_roc's (checked by test_score_standalone); skipping plots keeps this fast.
    with mock.patch("wsi_pipeline.scoring.plots.plot_task"):
        wide = score_predictions(table(), tmp_path / "a", n_resamples=100)["abmil"]["auc"]
        narrow = score_predictions(table(), tmp_path / "b", n_resamples=100, ci_level=0.8)["abmil"]["auc"]
    assert wide["value"] == narrow["value"] and wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["abmil"]["auc"] == narrow
    report = (tmp_path / "b" / "report.md").read_text()
    assert "AUC [80% CI]" in report and "80% confidence intervals" in report and "95%" not in report
    assert "AUC [95% CI]" in (tmp_path / "a" / "report.md").read_text()
