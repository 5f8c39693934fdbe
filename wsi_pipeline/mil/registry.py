"""The aggregator registry: the one place that knows every aggregator and its defaults.

Workflow presets name an aggregator (``model: abmil``) and may override some of its
hyper-parameters; :func:`build_aggregator` turns that into a module. A new aggregator is one
class in ``mil.models`` (or anywhere) plus one :func:`register_aggregator` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.models import GatedABMIL, MeanPoolMLP


@dataclass(frozen=True)
class AggregatorSpec:
    """What the registry knows about one aggregator.

    Attributes
    ----------
    name
        The name used in workflow presets and result tables.
    builder
        ``builder(in_dim, **params) -> nn.Module``; the module follows the aggregator contract
        ``forward(bag (N, D)) -> (logit (), weights (N,))``.
    defaults
        Every hyper-parameter the builder accepts, with its default. Only these keys may be
        overridden, so a typo in a preset is an error instead of being ignored.
    description
        One line for listings and error messages.
    """

    name: str
    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        # Read-only view so a caller cannot change the defaults every later build sees.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


AGGREGATORS: dict[str, AggregatorSpec] = {}


def register_aggregator(spec: AggregatorSpec) -> AggregatorSpec:
    """Add an aggregator to the registry.

    Parameters
    ----------
    spec
        The aggregator to add; its name must not be registered yet.

    Returns
    -------
    AggregatorSpec
        ``spec``, unchanged.

    Raises
    ------
    ValueError
        If the name is already taken (silently replacing a model would change results).
    """
    if spec.name in AGGREGATORS:
        raise ValueError(f"aggregator {spec.name!r} is already registered")
    AGGREGATORS[spec.name] = spec
    return spec


def available_aggregators() -> list[str]:
    """Return the registered aggregator names, sorted."""
    return sorted(AGGREGATORS)


def get_aggregator_spec(name: str) -> AggregatorSpec:
    """Return the spec registered under ``name``.

    Raises
    ------
    WSIPipelineError
        If no aggregator has that name; the message lists the available ones.
    """
    try:
        return AGGREGATORS[name]
    except KeyError:
        names = ", ".join(available_aggregators())
        raise WSIPipelineError(
            f"unknown aggregator {name!r}; available aggregators: {names}",
            where="model",
            fix=f"set the workflow's model to one of: {names}",
        ) from None


def build_aggregator(name: str, in_dim: int, **params: Any) -> nn.Module:
    """Build a registered aggregator with its defaults, overridden by ``params``.

    Parameters
    ----------
    name
        A registered aggregator name, e.g. ``"abmil"`` or ``"meanpool"``.
    in_dim
        Feature dimension of the instances (the encoder's output size).
    **params
        Hyper-parameters to override; each must be one of the spec's ``defaults`` keys.

    Returns
    -------
    nn.Module
        A freshly initialised module (initialisation uses torch's global RNG: seed it first).

    Raises
    ------
    WSIPipelineError
        For an unknown name (listing the available ones) or an unknown hyper-parameter
        (listing the accepted ones).
    """
    spec = get_aggregator_spec(name)
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(sorted(spec.defaults)) or "(none)"
        raise WSIPipelineError(
            f"aggregator {name!r} has no hyper-parameter(s) {', '.join(unknown)}; it accepts: {accepted}",
            where="model parameters",
            fix="remove or rename the unknown parameter(s)",
        )
    return spec.builder(in_dim, **{**spec.defaults, **params})


register_aggregator(
    AggregatorSpec(
        name="abmil",
        builder=GatedABMIL,
        defaults={"hidden_dim": 128, "attention_dim": 64, "dropout": 0.25},
        description="gated attention MIL (Ilse et al. 2018)",
    )
)
register_aggregator(
    AggregatorSpec(
        name="meanpool",
        builder=MeanPoolMLP,
        defaults={"hidden_dim": 128, "dropout": 0.25},
        description="mean of instance features, then an MLP (baseline)",
    )
)
