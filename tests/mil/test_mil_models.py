"""Aggregators and their registry."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.models import GatedABMIL, MeanPoolMLP
from wsi_pipeline.mil.registry import AGGREGATORS, AggregatorSpec, build_aggregator, register_aggregator

NAMES = ["abmil", "meanpool"]


def make(name: str, in_dim: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_aggregator(name, in_dim).eval()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 7, 300])
def test_output_shapes_and_weights_sum_to_one(name, n):
    model = make(name)
    logit, weights = model(torch.randn(n, 32))
    assert logit.shape == ()
    assert weights.shape == (n,)
    assert torch.all(weights >= 0)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bag_logit_is_permutation_invariant(name):
    model = make(name)
    bag = torch.randn(50, 32)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    logit, weights = model(bag)
    logit_p, weights_p = model(bag[perm])
    assert logit_p.item() == pytest.approx(logit.item(), abs=1e-5)
    torch.testing.assert_close(weights_p, weights[perm])


def test_single_instance_bag_gets_all_the_attention():
    model = make("abmil")
    bag = torch.randn(1, 32)
    logit, weights = model(bag)
    assert weights.item() == pytest.approx(1.0)
    assert torch.isfinite(logit)


def test_abmil_attention_is_not_uniform():
    # Guards against a softmax over the wrong axis (which would give all ones or 1/N).
    _, weights = make("abmil")(torch.randn(20, 32) * 3)
    assert weights.std().item() > 1e-4


def test_registry_builds_the_right_classes_with_defaults_and_overrides():
    assert isinstance(build_aggregator("abmil", 16), GatedABMIL)
    assert isinstance(build_aggregator("meanpool", 16), MeanPoolMLP)
    default = build_aggregator("abmil", 16)
    assert default.attention_v.out_features == AGGREGATORS["abmil"].defaults["attention_dim"]
    custom = build_aggregator("abmil", 16, hidden_dim=8, attention_dim=4)
    assert custom.attention_v.in_features == 8 and custom.attention_v.out_features == 4
    for spec in AGGREGATORS.values():
        assert spec.description


def test_unknown_aggregator_lists_the_available_names():
    with pytest.raises(WSIPipelineError) as caught:
        build_aggregator("transmil-typo", 16)
    message = str(caught.value)
    assert "transmil-typo" in message
    for name in NAMES:
        assert name in message


def test_unknown_hyper_parameter_is_rejected():
    with pytest.raises(WSIPipelineError, match="attention_dim"):
        build_aggregator("meanpool", 16, attention_dim=8)


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_aggregator(AggregatorSpec(name="abmil", builder=GatedABMIL))


@pytest.mark.parametrize("shape", [(0, 32), (4, 31), (1, 4, 32)])
def test_malformed_bags_are_rejected(shape):
    with pytest.raises(ValueError):
        make("abmil")(torch.randn(*shape))
