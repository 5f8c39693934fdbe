"""The workflow's scoring.subgroups: cohort-table columns to break metrics down by, checked when the workflow loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_pipeline.config.loader import validate_model
from wsi_pipeline.config.workflow import WorkflowPreset
from wsi_pipeline.errors import WSIPipelineError


def load(subgroups: list[str]) -> WorkflowPreset:
    return validate_model(WorkflowPreset, {"name": "x", "scoring": {"subgroups": subgroups}}, Path("challenge.yaml"), "workflow preset")


def test_subgroup_columns_load_in_order_and_default_to_none():
    assert load(["sex", " stage "]).scoring.subgroups == ["sex", "stage"]
    assert WorkflowPreset(name="x").scoring.subgroups == []


@pytest.mark.parametrize(
    ("subgroups", "message"),
    [
        (["patient_id"], "patient_id identifies rows, not groups of patients"),
        (["sex", "sex"], "names sex more than once"),
        ([""], "holds an empty column name"),
    ],
)
def test_bad_subgroup_columns_are_named(subgroups, message):
    with pytest.raises(WSIPipelineError, match=message) as error:
        load(subgroups)
    assert "challenge.yaml" in str(error.value) and "subgroups" in str(error.value)


def test_time_auc_horizons_are_positive_sorted_and_distinct():
    workflow = validate_model(WorkflowPreset, {"name": "x", "scoring": {"time_auc_horizons": [24, 12, 12]}}, Path("c.yaml"), "workflow preset")
    assert workflow.scoring.time_auc_horizons == [12.0, 24.0]
    with pytest.raises(WSIPipelineError, match="time_auc_horizons: 0.0 not > 0"):
        validate_model(WorkflowPreset, {"name": "x", "scoring": {"time_auc_horizons": [0, 12]}}, Path("c.yaml"), "workflow preset")
