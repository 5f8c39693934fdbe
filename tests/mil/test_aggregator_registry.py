"""The aggregator registry, and per-aggregator settings in the workflow's model section."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from wsi_pipeline.config.loader import validate_model
from wsi_pipeline.config.workflow import ModelConfig, WorkflowPreset
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.aggregators import (
    CLAMSB,
    Aggregator,
    GatedABMIL,
    MeanPoolMLP,
    TransMIL,
)
from wsi_pipeline.mil.registry import (
    AGGREGATORS,
    AggregatorSpec,
    Param,
    build_aggregator,
    count,
    register_aggregator,
    resolve_params,
)
from wsi_pipeline.mil.train import TrainConfig


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_each_spec_lists_exactly_its_builders_settings_and_defaults(name):
    spec = AGGREGATORS[name]
    parameters = inspect.signature(spec.resolve_builder()).parameters
    assert list(parameters)[:2] == ["in_dim", "n_outputs"]
    assert {key: p.default for key, p in list(parameters.items())[2:]} == spec.defaults
    assert spec.description and spec.reference


def test_the_registry_builds_the_right_classes_with_defaults_and_overrides():
    assert isinstance(build_aggregator("abmil", 16, 1), GatedABMIL)
    assert isinstance(build_aggregator("meanpool", 16, 1), MeanPoolMLP)
    default = build_aggregator("abmil", 16, 1)
    assert default.attention_v.out_features == AGGREGATORS["abmil"].defaults["attention_dim"]
    custom = build_aggregator("clam-sb", 16, 3, hidden_dim=8, attention_dim=4, k_sample=2)
    assert isinstance(custom, CLAMSB)
    assert custom.classifier.out_features == 3 and custom.k_sample == 2 and len(custom.instance_classifiers) == 3
    assert isinstance(build_aggregator("transmil", 16, 1, hidden_dim=16, heads=4), TransMIL)


def test_an_unknown_aggregator_suggests_the_closest_and_lists_all():
    with pytest.raises(WSIPipelineError) as caught:
        build_aggregator("transmill", 16, 1)
    message = str(caught.value)
    assert "did you mean 'transmil'" in message
    for name in AGGREGATORS:
        assert name in message


def test_unknown_settings_are_rejected_with_the_accepted_ones():
    with pytest.raises(WSIPipelineError) as caught:
        build_aggregator("clam-sb", 16, 1, k_samples=4)
    message = str(caught.value)
    assert "did you mean 'k_sample'" in message
    for key in AGGREGATORS["clam-sb"].params:
        assert key in message
    with pytest.raises(WSIPipelineError, match="accepts: \\(none\\)"):
        build_aggregator("linear-probe", 16, 1, hidden_dim=8)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("abmil", {"dropout": 1.0}, r"dropout: expected a number in \[0, 1\)"),
        ("abmil", {"hidden_dim": 0}, "hidden_dim: expected an integer >= 1"),
        ("abmil", {"hidden_dim": 8.5}, "hidden_dim: expected an integer >= 1"),
        ("abmil", {"hidden_dim": True}, "hidden_dim"),
        ("clam-sb", {"instance_loss": "hinge"}, "instance_loss: expected one of 'svm', 'ce'"),
        ("clam-sb", {"bag_weight": 1.5}, "bag_weight"),
        ("dsmil", {"nonlinear_q": "yes"}, "nonlinear_q: expected true or false"),
        ("transmil", {"hidden_dim": 20}, r"hidden_dim \(20\) must be a multiple of heads \(8\)"),
        ("transmil", {"residual_kernel": 4}, "residual_kernel"),
    ],
)
def test_bad_values_are_rejected_naming_the_setting(name, params, message):
    with pytest.raises(WSIPipelineError, match=message) as caught:
        resolve_params(name, params)
    assert caught.value.where == f"model.aggregator_params.{name}"


def test_resolved_settings_are_every_default_with_overrides_in_their_types():
    resolved = resolve_params("clam-mb", {"dropout": 0, "k_sample": 4})
    assert resolved == {**AGGREGATORS["clam-mb"].defaults, "dropout": 0.0, "k_sample": 4}
    assert isinstance(resolved["dropout"], float)


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_aggregator(AggregatorSpec(name="abmil", builder=GatedABMIL))


def test_a_builder_must_return_an_aggregator(monkeypatch):
    monkeypatch.setitem(AGGREGATORS, "not-one", AggregatorSpec("not-one", lambda in_dim, n_outputs, width: object(), {"width": count(3)}))
    with pytest.raises(TypeError, match="not an Aggregator"):
        build_aggregator("not-one", 4, 1)


def test_a_new_aggregator_is_a_subclass_and_one_registration(monkeypatch):
    class Constant(Aggregator):
        def __init__(self, in_dim, n_outputs, value=0.5):
            super().__init__(in_dim, n_outputs)
            self.bias = torch.nn.Parameter(torch.full((n_outputs,), value))

        def forward(self, bags, mask):
            return self.bias.expand(bags.shape[0], -1), mask.float() / mask.sum(dim=1, keepdim=True)

    monkeypatch.setitem(AGGREGATORS, "constant", AggregatorSpec("constant", Constant, {"value": Param(0.5)}))
    model = build_aggregator("constant", 4, 2, value=1)  # an int for a float setting is fine
    assert model.bias.tolist() == [1.0, 1.0]


def test_loading_the_workflow_config_does_not_import_torch():
    code = (
        "import sys; import wsi_pipeline.config.loader; "
        "from wsi_pipeline.config.workflow import ModelConfig; "
        "ModelConfig(aggregators=['abmil', 'clam-sb'], aggregator_params={'clam-sb': {'k_sample': 4}}); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# -- settings in the workflow's model section ---------------------------------------------------
def test_a_plain_list_of_names_still_works():
    model = ModelConfig(aggregators=["abmil", "meanpool"])
    assert model.aggregators == ["abmil", "meanpool"] and model.aggregator_params == {}
    assert model.aggregator_settings("abmil") == {}


def test_settings_come_from_aggregator_params_over_the_shared_hidden_dim_and_dropout():
    model = ModelConfig(
        aggregators=["abmil", "clam-sb", "linear-probe", "dsmil"],
        hidden_dim=64,
        dropout=0.1,
        aggregator_params={"clam-sb": {"k_sample": 4, "dropout": 0}},
    )
    assert model.aggregator_settings("abmil") == {"hidden_dim": 64, "dropout": 0.1}
    assert model.aggregator_settings("clam-sb") == {"hidden_dim": 64, "dropout": 0.0, "k_sample": 4}
    assert model.aggregator_settings("linear-probe") == {}  # has neither setting
    assert model.aggregator_settings("dsmil") == {}
    config = TrainConfig.from_model(model)
    assert config.params_for("clam-sb") == {"hidden_dim": 64, "dropout": 0.0, "k_sample": 4}
    assert config.params_for("meanpool") == {"hidden_dim": 64, "dropout": 0.1}  # every registered one


def test_a_workflow_yaml_with_settings_loads(tmp_path):
    preset = {
        "name": "t",
        "model": {"aggregators": ["abmil", "clam-sb", "transmil"], "aggregator_params": {"clam-sb": {"k_sample": 8, "dropout": 0.25}, "transmil": {"heads": 4}}},
    }
    workflow = validate_model(WorkflowPreset, preset, tmp_path / "w.yaml", "workflow preset")
    assert workflow.model.aggregator_settings("transmil") == {"heads": 4}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"aggregators": ["abmil", "clam_sb"]}, r"model\.aggregators.*unknown aggregator 'clam_sb'; did you mean 'clam-sb'"),
        ({"aggregators": ["clam-sb"], "aggregator_params": {"clam-sb": {"k_samples": 8}}}, r"model\.aggregator_params.*did you mean 'k_sample'"),
        ({"aggregators": ["abmil"], "aggregator_params": {"clam-sb": {}}}, "aggregator_params sets clam-sb, not in aggregators"),
        ({"aggregators": ["abmil"], "aggregator_params": {"abmil": {"dropout": 2}}}, r"dropout: expected a number in \[0, 1\)"),
        ({"aggregators": ["transmil"], "hidden_dim": 100}, "must be a multiple of heads"),
        ({"aggregators": ["abmil", "abmil"]}, "more than once: abmil"),
        ({"aggregators": []}, "at least one aggregator"),
    ],
)
def test_bad_aggregator_settings_fail_when_the_workflow_loads(tmp_path, model, expected):
    with pytest.raises(WSIPipelineError, match=expected) as caught:
        validate_model(WorkflowPreset, {"name": "t", "model": model}, tmp_path / "w.yaml", "workflow preset")
    assert "w.yaml" in caught.value.format()


def test_model_config_is_where_values_are_checked():
    with pytest.raises(ValidationError, match="lr"):
        ModelConfig(lr=0)


def test_train_config_takes_values_as_given():
    # No second check: TrainConfig holds what ModelConfig validated.
    assert "__post_init__" not in TrainConfig.__dict__
    config = TrainConfig.from_model(ModelConfig(max_epochs=3, patience=2, lr=1e-3, weight_decay=0, max_instances=None))
    assert (config.max_epochs, config.patience, config.lr, config.weight_decay, config.max_instances) == (3, 2, 1e-3, 0.0, None)
    assert config.params_for("abmil") == {}
