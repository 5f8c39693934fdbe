"""The submission file: one row per patient, the named model's predictions averaged over repeats, headers renamed."""

from __future__ import annotations

from unittest import mock

import pandas as pd
import pytest

from wsi_pipeline.config.submission import SubmissionConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.submission import submission_table, write_submission


def predictions(**extra) -> pd.DataFrame:
    # Two repeats of two models; abmil's scores differ between repeats so the mean is visible.
    rows = []
    for repeat, scores in ((0, {"P1": 0.2, "P2": 0.9, "P10": 0.4}), (1, {"P1": 0.4, "P2": 0.7, "P10": 0.1})):
        for patient, score in scores.items():
            rows.append({"patient_id": patient, "model": "abmil", "repeat": repeat, "fold": 0, "label": 1, "score": score})
            rows.append({"patient_id": patient, "model": "meanpool", "repeat": repeat, "fold": 0, "label": 1, "score": 0.5})
    return pd.DataFrame(rows).assign(**extra)


def test_the_file_holds_each_patient_once_with_the_mean_over_repeats_under_the_new_header(tmp_path):
    config = SubmissionConfig(model="abmil", file="sub.csv", id_column="case", columns={"score": "probability"}, decimals=3)
    summary = write_submission(predictions(), config, tmp_path, ("score",))
    text = (tmp_path / "sub.csv").read_text()
    assert text.splitlines() == ["case,probability", "P1,0.300", "P10,0.250", "P2,0.800"]
    assert (summary.n_patients, summary.n_repeats, summary.header) == (3, 2, ("case", "probability"))
    assert summary.describe() == "sub.csv: out-of-fold predictions of abmil, 3 patients, mean over 2 repeats (case, probability)"
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, none left behind


def test_ids_stay_text_and_tsv_with_full_precision(tmp_path):
    table = predictions().replace({"P1": "007"})
    config = SubmissionConfig(model="abmil", file="sub.tsv", decimals=None, format="tsv")
    write_submission(table, config, tmp_path, ("score",))
    read = pd.read_csv(tmp_path / "sub.tsv", sep="\t", dtype={"patient_id": str})
    assert list(read.columns) == ["patient_id", "score"]  # no columns given: the task's, under their names
    assert read.set_index("patient_id")["score"].to_dict() == pytest.approx({"007": 0.3, "P10": 0.25, "P2": 0.8})


def test_slide_rows_average_a_patients_slides_and_multiclass_predicted_is_the_most_probable_mean_class():
    rows = pd.DataFrame({
        "patient_id": ["A", "A", "B"], "slide_id": ["a1", "a2", "b1"], "model": "abmil", "repeat": 0, "fold": 0, "label": "x",
        "prob_x": [0.9, 0.2, 0.3], "prob_y": [0.1, 0.8, 0.7], "predicted": ["x", "y", "y"],
    })
    config = SubmissionConfig(model="abmil", columns={"prob_x": "px", "predicted": "class"})
    table = submission_table(rows, config, ("prob_x", "prob_y", "predicted"))
    assert table.to_dict("list") == {"patient_id": ["A", "B"], "px": pytest.approx([0.55, 0.3]), "class": ["x", "y"]}


def test_a_model_without_predictions_is_an_error_naming_the_models():
    with pytest.raises(WSIPipelineError, match="no predictions of model 'clam'.*abmil, meanpool"):
        submission_table(predictions(), SubmissionConfig(model="clam"), ("score",))


def test_the_score_stage_writes_the_submission_and_the_report_names_it(tmp_path):
    from wsi_pipeline.scoring.stage import score_predictions

    table = predictions(label=[1, 1, 0, 0, 1, 1] * 2)
    config = SubmissionConfig(model="abmil", columns={"score": "probability"})
    # The plots are not what is tested here; skipping them keeps the test fast.
    with mock.patch("wsi_pipeline.scoring.plots.plot_task"), mock.patch("wsi_pipeline.scoring.plots.plot_km"):
        score_predictions(table, tmp_path, n_resamples=100, submission=config)
    assert (tmp_path / "submission.csv").read_text().splitlines()[0] == "patient_id,probability"
    assert "**submission**: submission.csv: out-of-fold predictions of abmil, 3 patients, mean over 2 repeats" in (
        tmp_path / "report.md").read_text()
