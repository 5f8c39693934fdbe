"""Validating and loading predictions tables: clear errors for bad input."""

import pandas as pd
import pytest

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.predictions import (
    REQUIRED_COLUMNS,
    load_predictions,
    validate_predictions,
)


def table(**overrides) -> pd.DataFrame:
    base = {
        "patient_id": ["p1", "p2", "p3", "p4"],
        "model": ["abmil"] * 4,
        "fold": [0, 0, 1, 1],
        "label": [0, 1, 0, 1],
        "score": [0.1, 0.8, 0.4, 0.6],
    }
    base.update(overrides)
    return pd.DataFrame(base)


@pytest.mark.parametrize("column", list(REQUIRED_COLUMNS))
def test_missing_column_is_named(column):
    with pytest.raises(WSIPipelineError) as err:
        validate_predictions(table().drop(columns=column), source="run/predictions.csv")
    assert f"'{column}'" in str(err.value)
    assert "run/predictions.csv" in str(err.value)
    assert err.value.fix


def test_one_survival_column_without_the_other_is_an_error():
    with pytest.raises(WSIPipelineError, match="'event'"):
        validate_predictions(table(pfs_months=[1.0, 2.0, 3.0, 4.0]))


@pytest.mark.parametrize(
    "overrides, column",
    [
        ({"label": [0, 2, 0, 1]}, "label"),
        ({"score": [0.1, 1.5, 0.4, 0.6]}, "score"),
        ({"score": [0.1, "high", 0.4, 0.6]}, "score"),
        ({"score": [0.1, None, 0.4, 0.6]}, "score"),
        ({"fold": [0, 0.5, 1, 1]}, "fold"),
        ({"pfs_months": [1.0, -1.0, 2.0, 3.0], "event": [1, 0, 1, 1]}, "pfs_months"),
        ({"pfs_months": [1.0, 1.0, 2.0, 3.0], "event": [1, 3, 1, 1]}, "event"),
    ],
)
def test_bad_values_name_the_column(overrides, column):
    with pytest.raises(WSIPipelineError, match=f"'{column}'"):
        validate_predictions(table(**overrides))


def test_duplicate_patient_model_pair_is_an_error():
    with pytest.raises(WSIPipelineError, match=r"\(p1, abmil\)"):
        validate_predictions(table(patient_id=["p1", "p1", "p3", "p4"]))


def test_same_patient_in_two_models_is_fine_but_labels_must_agree():
    two = pd.concat([table(), table(model=["meanpool"] * 4)], ignore_index=True)
    assert len(validate_predictions(two)) == 8
    two.loc[4, "label"] = 1  # p1 under meanpool
    with pytest.raises(WSIPipelineError, match="different labels"):
        validate_predictions(two)


def test_empty_table_is_an_error():
    with pytest.raises(WSIPipelineError, match="no rows"):
        validate_predictions(table().iloc[:0])


def test_clean_table_is_typed_and_survival_gaps_kept():
    df = validate_predictions(table(label=[0.0, 1.0, 0.0, 1.0], pfs_months=[1.0, None, 3.0, 4.0],
                                    event=[1, None, 0, 1]))
    assert df["label"].dtype.kind == "i" and df["fold"].dtype.kind == "i"
    assert df["pfs_months"].isna().sum() == 1  # no follow-up is allowed, not an error


def test_load_keeps_identifiers_as_text(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("patient_id,model,fold,label,score\n007,1,0,0,0.2\n008,1,0,1,0.9\n")
    df = load_predictions(path)
    assert df["patient_id"].tolist() == ["007", "008"]
    assert df["model"].tolist() == ["1", "1"]


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(WSIPipelineError, match="not found") as err:
        load_predictions(tmp_path / "nope.csv")
    assert "nope.csv" in str(err.value)


def test_load_empty_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("")
    with pytest.raises(WSIPipelineError, match="empty"):
        load_predictions(path)


def test_load_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("patient_id,model,fold,score\np1,abmil,0,0.2\n")
    with pytest.raises(WSIPipelineError) as err:
        load_predictions(path)
    assert "'label'" in str(err.value) and str(path) in str(err.value)


def test_a_slide_level_table_has_a_row_per_slide_and_no_slide_twice(tmp_path):
    slides = table(patient_id=["p1", "p1", "p2", "p2"], slide_id=["007", "8", "007", "9"], label=[0, 0, 1, 1])
    path = tmp_path / "predictions.csv"
    slides.to_csv(path, index=False)
    loaded = load_predictions(path)
    # Two slides of one patient are two rows, not a duplicate; ids stay text ("007").
    assert list(zip(loaded["patient_id"], loaded["slide_id"])) == [("p1", "007"), ("p1", "8"), ("p2", "007"), ("p2", "9")]
    twice = table(patient_id=["p1", "p1", "p2", "p2"], slide_id=["a", "a", "b", "c"], label=[0, 0, 1, 1])
    with pytest.raises(WSIPipelineError) as err:
        validate_predictions(twice)
    assert "a of p1 (abmil)" in err.value.what and "one row per slide" in err.value.fix
