"""The workflow's scoring.submission section: checked against the trained models and the task when the workflow loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsi_pipeline.config.loader import package_presets, validate_model
from wsi_pipeline.config.submission import task_prediction_columns
from wsi_pipeline.config.workflow import WorkflowPreset
from wsi_pipeline.errors import WSIPipelineError


def preset(submission: dict, **sections) -> dict:
    return {"name": "x", "model": {"aggregators": ["abmil", "meanpool"]}, "scoring": {"submission": submission}, **sections}


def load(data: dict) -> WorkflowPreset:
    return validate_model(WorkflowPreset, data, Path("challenge.yaml"), "workflow preset")


def test_a_submission_section_loads_with_its_defaults():
    submission = load(preset({"model": "abmil", "columns": {"score": "probability"}})).scoring.submission
    assert (submission.file, submission.id_column, submission.decimals, submission.format) == ("submission.csv", "patient_id", 6, "csv")
    assert submission.columns == {"score": "probability"}
    assert WorkflowPreset(name="x").scoring.submission is None


def test_the_respred_preset_declares_a_submission_of_a_model_it_trains():
    data = yaml.safe_load((package_presets() / "respred_uc.yaml").read_text())
    workflow = load(data)
    assert workflow.scoring.submission.model in workflow.model.aggregators
    assert workflow.scoring.submission.columns == {"score": "probability"}


@pytest.mark.parametrize(
    ("submission", "sections", "message"),
    [
        ({"model": "abmill"}, {}, "'abmill' is not trained: did you mean 'abmil'? model.aggregators lists abmil, meanpool"),
        ({"model": "transmil"}, {}, "'transmil' is not trained: model.aggregators lists"),
        ({"model": "abmil", "columns": {"scor": "p"}}, {}, "'scor' is not a prediction column of a binary task: did you mean 'score'?"),
        ({"model": "abmil", "columns": {"score": "p"}}, {"task": {"type": "survival"}}, "it writes risk"),
        ({"model": "abmil", "columns": {"prob_c": "p"}}, {"task": {"type": "multiclass", "classes": ["a", "b"]}},
         "it writes prob_a, prob_b, predicted"),
        ({"model": "abmil", "fil": "s.csv"}, {}, "'scoring.submission.fil': unknown key. Did you mean 'file'?"),
        ({"model": "abmil", "file": "predictions.csv"}, {}, "one of the run's own outputs"),
        ({"model": "abmil", "file": "../s.csv"}, {}, "plain file name"),
        ({"model": "abmil", "columns": {"score": "patient_id"}}, {}, "repeated: 'patient_id'"),
        ({"model": "abmil", "format": "json"}, {}, "'csv' or 'tsv'"),
        ({"model": "abmil", "decimals": -1}, {}, "scoring.submission.decimals"),
    ],
)
def test_a_bad_submission_section_names_the_field_and_the_fix(submission, sections, message):
    with pytest.raises(WSIPipelineError, match="challenge.yaml") as error:
        load(preset(submission, **sections))
    assert message in str(error.value)


def test_prediction_columns_follow_the_task_without_torch():
    assert task_prediction_columns(WorkflowPreset(name="x").task) == ("score",)
    assert task_prediction_columns(WorkflowPreset(name="x", task={"type": "regression"}).task) == ("prediction",)
    assert task_prediction_columns(WorkflowPreset(name="x", task={"type": "survival", "loss": "discrete"}).task) == ("risk", "rmst")
    # Classes from the cohort: any prob_<class> column is accepted when the workflow loads.
    open_classes = preset({"model": "abmil", "columns": {"prob_responder": "p", "predicted": "label"}}, task={"type": "multiclass"})
    assert load(open_classes).scoring.submission.columns == {"prob_responder": "p", "predicted": "label"}
