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
