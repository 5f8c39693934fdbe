"""The workflow's task and validation sections: one model per task type, checked once at load time."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from pydantic import ValidationError

from wsi_pipeline.config.workflow import (
    BinaryTaskConfig,
    MulticlassTaskConfig,
    RegressionTaskConfig,
    SurvivalTaskConfig,
    WorkflowPreset,
)
from wsi_pipeline.mil.tasks.settings import TASK_CONFIGS


def test_the_task_type_picks_its_section_and_defaults_to_binary():
    assert isinstance(WorkflowPreset(name="x").task, BinaryTaskConfig)
    assert isinstance(WorkflowPreset(name="x", task={"label_column": "y"}).task, BinaryTaskConfig)
    assert isinstance(WorkflowPreset(name="x", task={"type": "multiclass", "classes": [1, 2, 3]}).task, MulticlassTaskConfig)
    survival = WorkflowPreset(name="x", task={"type": "survival", "loss": "discrete", "n_bins": 3}).task
    assert isinstance(survival, SurvivalTaskConfig) and survival.n_bins == 3


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"type": "ordinal"}, "ordinal"),
        ({"type": "survival", "loss": "aft"}, "loss"),
        ({"type": "survival", "n_bins": 1}, "n_bins must be an integer >= 2"),
        ({"type": "regression", "huber_delta": -1}, "huber_delta must be a positive number"),
        ({"type": "regression", "classes": ["a"]}, "classes"),  # a multiclass setting on a regression task
        ({"type": "multiclass", "classes": ["a", "a"]}, "classes lists a class twice"),
        ({"type": "binary", "n_bins": 4}, "n_bins"),
        ({"type": "survival", "time_column": "t", "event_column": "t"}, "both 't'"),
    ],
)
def test_bad_task_settings_fail_when_the_workflow_loads(task, message):
    with pytest.raises(ValidationError, match=message):
        WorkflowPreset(name="x", task=task)


def test_every_setting_of_a_task_type_is_in_its_section():
    """The sections and the task settings dataclasses cannot drift apart (binary's threshold is scoring.threshold)."""
    sections = {"binary": BinaryTaskConfig, "multiclass": MulticlassTaskConfig, "regression": RegressionTaskConfig,
                "survival": SurvivalTaskConfig}
    for kind, section in sections.items():
        fields = {f.name for f in dataclasses.fields(TASK_CONFIGS[kind])}
        assert set(section.model_fields) - {"type"} == fields - ({"threshold"} if kind == "binary" else set()), kind


def test_a_binary_task_takes_the_scoring_threshold():
    preset = WorkflowPreset(name="x", scoring={"threshold": 0.3})
    assert preset.task_settings()["threshold"] == 0.3
    assert "threshold" not in WorkflowPreset(name="x", task={"type": "regression"}).task_settings()


def test_validation_repeats_and_site_stratification():
    preset = WorkflowPreset(name="x", validation={"n_repeats": 3, "stratify_site": True})
    assert preset.validation.n_repeats == 3 and preset.validation.stratify_site
    with pytest.raises(ValidationError, match="n_repeats"):
        WorkflowPreset(name="x", validation={"n_repeats": 0})


def test_checking_a_task_section_does_not_import_torch():
    code = ("import sys; from wsi_pipeline.config.workflow import WorkflowPreset; "
            "WorkflowPreset(name='x', task={'type': 'survival'}); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("name", ["demo", "demo_multiclass", "demo_regression", "demo_survival", "mil_benchmark", "respred_uc"])
def test_shipped_workflows_load(name):
    import yaml

    from wsi_pipeline.config.loader import package_presets

    assert WorkflowPreset(**yaml.safe_load((package_presets() / f"{name}.yaml").read_text())).name == name
