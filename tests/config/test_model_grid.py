"""model.grid and validation.inner_folds: checked when the workflow loads, with messages that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from wsi_pipeline.config import load_run_config
from wsi_pipeline.config.workflow import MAX_GRID_POINTS, ModelConfig, ValidationConfig
from wsi_pipeline.errors import WSIPipelineError

REPO = Path(__file__).resolve().parents[2]


def load_with(folder: Path, **overrides):
    data = {"workflow": str(REPO / "workflows" / "demo.yaml"), "cohort": {"synthetic": {"n_patients": 10}}, "output": "out",
            "overrides": overrides}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # the grid keeps its order, as a written YAML does
    return load_run_config(path)


def test_a_grid_loads_with_its_values_converted_as_the_plain_fields_are(tmp_path):
    # YAML reads 1e-3 (no dot) as text; the plain lr field accepts it, so the grid does too.
    config = load_with(tmp_path, model={"grid": {"lr": ["1e-3", 0.0003], "hidden_dim": [8, 16]}}, validation={"inner_folds": 4})
    model = config.workflow.model
    assert model.grid == {"lr": [0.001, 0.0003], "hidden_dim": [8, 16]}
    assert model.grid_points() == [
        {"lr": 0.001, "hidden_dim": 8}, {"lr": 0.001, "hidden_dim": 16}, {"lr": 0.0003, "hidden_dim": 8}, {"lr": 0.0003, "hidden_dim": 16},
    ]
    assert config.workflow.validation.inner_folds == 4
    assert load_with(tmp_path).workflow.model.grid is None and ValidationConfig().inner_folds == 3


def test_an_unknown_grid_setting_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(WSIPipelineError) as error:
        load_with(tmp_path, model={"grid": {"learning_rate": [1e-3], "hiden_dim": [8]}})
    message = error.value.format()
    assert "overrides.model.grid" in message and "'learning_rate' is not a setting the grid can vary; did you mean 'lr'?" in message
    assert "lr, weight_decay, hidden_dim, dropout, max_instances" in message
    with pytest.raises(WSIPipelineError, match="did you mean 'hidden_dim'"):
        load_with(tmp_path, model={"grid": {"hiden_dim": [8]}})


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ({"dropout": [0.1, 1.5]}, "dropout value 1.5: Input should be less than 1"),
        ({"lr": [0.0]}, "lr value 0.0: Input should be greater than 0"),
        ({"hidden_dim": ["wide"]}, "hidden_dim value 'wide'"),
        ({"lr": []}, "lr lists no value"),
        ({"lr": [1e-3, 0.001]}, "lr lists a value twice"),
        ({"lr": 0.001}, "Input should be a valid list"),
        ({}, "grid is empty"),
        ({"lr": [1e-4, 2e-4, 3e-4, 4e-4, 5e-4], "dropout": [0.0, 0.1, 0.2, 0.3]}, f"20 combinations (5 lr x 4 dropout); at most {MAX_GRID_POINTS}"),
    ],
)
def test_bad_grid_values_are_refused_like_the_plain_fields(grid, expected):
    with pytest.raises(ValidationError) as error:
        ModelConfig(grid=grid)
    assert expected in str(error.value)


def test_a_grid_setting_an_aggregator_overrides_is_refused():
    with pytest.raises(ValidationError, match="grid varies dropout but aggregator_params sets dropout for abmil"):
        ModelConfig(aggregators=["abmil", "meanpool"], aggregator_params={"abmil": {"dropout": 0.1}}, grid={"dropout": [0.0, 0.2]})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        ValidationConfig(inner_folds=1)
