"""Subgroup and site breakdowns: each value's headline metric against scikit-learn on its rows, the columns chosen, the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks import RegressionTask
from wsi_pipeline.scoring.stage import score_predictions
from wsi_pipeline.scoring.subgroups import subgroup_columns


def binary_table(n: int = 36) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    y = np.tile([0, 1], n // 2)
    return pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(n)], "model": "m", "fold": 0, "label": y,
                         "score": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, n), 0, 1),
                         "site": np.repeat(["north", "south", "west"], n // 3), "sex": np.tile(["f", "f", "m", "m"], n // 4)})


def test_site_and_requested_columns_get_each_value_s_headline_metric(tmp_path):
    table = binary_table()
    entry = score_predictions(table, tmp_path, n_resamples=100, subgroups=["sex"])["m"]
    assert list(entry["subgroups"]) == ["site", "sex"]
    for column in ("site", "sex"):
        for value, rows in table.groupby(column):
            got = entry["subgroups"][column][value]
            assert got["auc"]["value"] == pytest.approx(roc_auc_score(rows["label"], rows["score"]))
            assert got["auc"]["ci_low"] <= got["auc"]["value"] <= got["auc"]["ci_high"]
            assert got["n_patients"] == len(rows)
    report = (tmp_path / "report.md").read_text()
    assert "## Subgroups" in report and "| m | site | north | 12 |" in report


def test_regression_breakdown_and_slide_rows_draw_patients(tmp_path):
    rng = np.random.default_rng(1)
    y = np.repeat(rng.normal(size=12), 2)  # 12 patients of 2 slides
    table = pd.DataFrame({"patient_id": np.repeat([f"P{i}" for i in range(12)], 2), "slide_id": [f"S{i}" for i in range(24)],
                          "model": "m", "fold": 0, "target": y, "prediction": y + rng.normal(0, 0.5, 24),
                          "site": np.repeat(["a", "b"], 12)})
    got = score_predictions(table, tmp_path, n_resamples=100, task=RegressionTask())["m"]["subgroups"]["site"]["a"]
    rows = table[table["site"] == "a"]
    assert got["mae"]["value"] == pytest.approx(mean_absolute_error(rows["target"], rows["prediction"]))
    assert got["r2"]["value"] == pytest.approx(r2_score(rows["target"], rows["prediction"]))
    assert (got["n_patients"], got["n_slides"]) == (6, 12)


def test_no_site_and_no_request_means_no_breakdown_and_a_missing_column_is_an_error(tmp_path):
    table = binary_table().drop(columns="site")
    assert "subgroups" not in score_predictions(table, tmp_path, n_resamples=100)["m"]
    with pytest.raises(WSIPipelineError, match="subgroup column 'stage' is not among") as error:
        subgroup_columns(table, ["stage"], where="preds.csv", option="--subgroup-column")
    assert "--subgroup-column" in str(error.value)
    with pytest.raises(WSIPipelineError, match="identifies rows"):
        subgroup_columns(table, ["patient_id"], where="preds.csv", option="scoring.subgroups")
