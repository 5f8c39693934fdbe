"""The aggregator registry: the one place that knows every aggregator, its settings and their defaults.

Workflow presets name aggregators (``model.aggregators: [abmil, clam-sb]``) and may set some of
their settings (``model.aggregator_params: {clam-sb: {k_sample: 16}}``); the config models check
those against this registry when the workflow is loaded (:func:`resolve_params`), and
:func:`build_aggregator` turns a name and settings into a module.

This module imports no torch: an aggregator's class is named as ``"module:Class"`` and imported
when the first model is built, so loading and validating a workflow stays fast. A new aggregator
is one :class:`~wsi_pipeline.mil.aggregators.base.Aggregator` subclass plus one
:func:`register_aggregator` call.
"""

from __future__ import annotations

import difflib
import importlib
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from wsi_pipeline.errors import WSIPipelineError


@dataclass(frozen=True)
class Param:
    """One setting of an aggregator: its default, and which values it accepts.

    The default's type is the accepted type (an int setting takes integers, a float setting
    any number, a bool setting true/false, a str setting one of ``choices``); ``accepts``
    further restricts the value, ``rule`` says how in words for error messages.
    """

    default: Any
    rule: str = ""
    accepts: Callable[[Any], bool] | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Return ``(value as stored, None)``, or ``(value, what is wrong)``."""
        kind = type(self.default)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
        elif kind is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, kind) and (not self.choices or value in self.choices)
        if ok and self.accepts is not None:
            ok = bool(self.accepts(value))
        return value, None if ok else f"expected {self.describe()}, got {value!r}"

    def describe(self) -> str:
        """The accepted values in words."""
        if self.rule:
            return self.rule
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(type(self.default), "a value")


def count(default: int) -> Param:
    """An integer setting of at least 1 (a size, a count)."""
    return Param(default, "an integer >= 1", lambda v: v >= 1)


def rate(default: float) -> Param:
    """A dropout rate, in [0, 1)."""
    return Param(default, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)


def weight(default: float) -> Param:
    """A mixing weight, in [0, 1]."""
    return Param(default, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def flag(default: bool) -> Param:
    """A true/false setting."""
    return Param(default)


def choice(default: str, *choices: str) -> Param:
    """A setting that takes one of a few names."""
    return Param(default, choices=(default, *(c for c in choices if c != default)))


@dataclass(frozen=True)
class AggregatorSpec:
    """What the registry knows about one aggregator.

    Attributes
    ----------
    name
        The name used in workflow presets and result tables.
    builder
        ``builder(in_dim, n_outputs, **settings) -> Aggregator``, or ``"module:attribute"``
        naming it (imported on first use, so the registry stays free of torch).
    params
        Every setting the builder accepts, with its default and accepted values. Only these may
        be set, so a typo in a preset is an error instead of being ignored.
    description
        One line for listings and error messages.
    reference
        Where the defaults come from (the reference implementation).
    check
        Optional check of a complete set of settings (for constraints between settings); returns
        what is wrong, or ``None``.
    class_targets
        Training needs a class index per bag (CLAM's instance clustering loss): usable with
        classification tasks only (binary, multiclass), not regression or survival.
    """

    name: str
    builder: Callable[..., Any] | str
    params: Mapping[str, Param] = field(default_factory=dict)
    description: str = ""
    reference: str = ""
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    class_targets: bool = False

    def __post_init__(self) -> None:
        # Read-only view so a caller cannot change what every later build sees.
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def defaults(self) -> dict[str, Any]:
        """Every setting with its default value."""
        return {key: param.default for key, param in self.params.items()}

    def resolve_builder(self) -> Callable[..., Any]:
        """The builder itself, importing it when given as ``"module:attribute"``."""
        if callable(self.builder):
            return self.builder
        module, _, attribute = self.builder.partition(":")
        return getattr(importlib.import_module(module), attribute)


AGGREGATORS: dict[str, AggregatorSpec] = {}


def register_aggregator(spec: AggregatorSpec) -> AggregatorSpec:
    """Add an aggregator to the registry.

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


def closest(name: str, names: list[str]) -> str | None:
    """The name a typo most likely meant: one that differs only in case or ``-``/``_``, one it
    abbreviates, else the most similar; ``None`` when nothing is close."""
    def normal(text: object) -> str:
        return str(text).strip().lower().replace("_", "-")

    key, candidates = normal(name), {normal(candidate): candidate for candidate in names}
    if key in candidates:
        return candidates[key]
    # difflib scores a short prefix ('clam' for 'clam-sb') below its cutoff.
    partial = [candidate for normalised, candidate in candidates.items() if key and key in normalised]
    if partial:
        return min(partial, key=len)
    close = difflib.get_close_matches(key, list(candidates), n=1)
    return candidates[close[0]] if close else None


def _did_you_mean(name: str, names: list[str]) -> str:
    suggestion = closest(name, names)
    return f"did you mean {suggestion!r}? " if suggestion else ""


def get_aggregator_spec(name: str) -> AggregatorSpec:
    """Return the spec registered under ``name``.

    Raises
    ------
    WSIPipelineError
        If no aggregator has that name; the message suggests the closest name and lists all.
    """
    try:
        return AGGREGATORS[name]
    except (KeyError, TypeError):
        names = available_aggregators()
        raise WSIPipelineError(
            f"unknown aggregator {name!r}; {_did_you_mean(name, names)}available aggregators: {', '.join(names)}",
            where="model.aggregators",
            fix=f"name registered aggregators only: {', '.join(names)}",
        ) from None


def resolve_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return every setting of aggregator ``name``: its defaults, overridden by ``params``, checked.

    Parameters
    ----------
    name
        A registered aggregator name.
    params
        Settings to override; each must be one of the aggregator's and take an accepted value.

    Returns
    -------
    dict
        Every setting, with values converted to the setting's type (an int given for a float).

    Raises
    ------
    WSIPipelineError
        For an unknown name, unknown settings (with the closest accepted name, and the list of
        accepted ones), values of the wrong type or range, or settings that do not fit together.
    """
    spec = get_aggregator_spec(name)
    params = dict(params or {})
    accepted = sorted(spec.params)
    problems = [
        f"unknown setting {key!r}; {_did_you_mean(key, accepted)}{name!r} accepts: {', '.join(accepted) or '(none)'}"
        for key in sorted(params, key=str)
        if key not in spec.params
    ]
    resolved = spec.defaults
    for key, value in params.items():
        if key in spec.params:
            resolved[key], problem = spec.params[key].check(value)
            if problem:
                problems.append(f"{key}: {problem}")
    if not problems and spec.check is not None:
        problem = spec.check(resolved)
        if problem:
            problems.append(problem)
    if problems:
        raise WSIPipelineError(
            f"invalid settings for aggregator {name!r}: " + "; ".join(problems),
            where=f"model.aggregator_params.{name}",
            fix=f"use the settings {name!r} accepts, with values as described",
        )
    return resolved


def build_aggregator(name: str, in_dim: int, n_outputs: int, **params: Any) -> Any:
    """Build a registered aggregator with its defaults, overridden by ``params``.

    Parameters
    ----------
    name
        A registered aggregator name, e.g. ``"abmil"`` or ``"clam-sb"``.
    in_dim
        Feature dimension of the instances (the encoder's output size).
    n_outputs
        Outputs per bag (1 for a binary task).
    **params
        Settings to override, checked by :func:`resolve_params`.

    Returns
    -------
    Aggregator
        A freshly initialised module (initialisation uses torch's global RNG: seed it first).

    Raises
    ------
    WSIPipelineError
        For an unknown name or invalid settings (see :func:`resolve_params`).
    TypeError
        If the builder does not return an ``Aggregator``.
    """
    from wsi_pipeline.mil.aggregators.base import Aggregator

    spec = get_aggregator_spec(name)
    module = spec.resolve_builder()(in_dim, n_outputs, **resolve_params(name, params))
    if not isinstance(module, Aggregator):
        raise TypeError(f"the builder of aggregator {name!r} returned {type(module).__name__}, not an Aggregator")
    return module


def _heads_divide_hidden(settings: Mapping[str, Any]) -> str | None:
    if settings["hidden_dim"] % settings["heads"]:
        return f"hidden_dim ({settings['hidden_dim']}) must be a multiple of heads ({settings['heads']})"
    return None


_PACKAGE = "wsi_pipeline.mil.aggregators"
_ABMIL = {"hidden_dim": count(128), "attention_dim": count(64), "dropout": rate(0.25)}
_CLAM = {
    "hidden_dim": count(512),
    "attention_dim": count(256),
    "dropout": rate(0.25),
    "k_sample": count(8),
    "bag_weight": weight(0.7),
    "instance_loss": choice("svm", "ce"),
    "subtyping": flag(False),
}
_POOL = {"hidden_dim": count(128), "dropout": rate(0.25)}

for _spec in (
    AggregatorSpec(
        "abmil", f"{_PACKAGE}.abmil:GatedABMIL", _ABMIL, "gated attention MIL (Ilse et al. 2018)",
        "this project's sizes (the demo's); the paper's code: hidden 500, attention 128, no dropout",
    ),
    AggregatorSpec(
        "abmil-plain", f"{_PACKAGE}.abmil:ABMIL", _ABMIL, "attention MIL without the gate (Ilse et al. 2018)",
        "as abmil",
    ),
    AggregatorSpec(
        "clam-sb", f"{_PACKAGE}.clam:CLAMSB", _CLAM, "CLAM, single attention branch, instance clustering (Lu et al. 2021)",
        "mahmoodlab/CLAM: model size 'small', --drop_out 0.25, --B 8, --bag_weight 0.7, --inst_loss svm",
        class_targets=True,
    ),
    AggregatorSpec(
        "clam-mb", f"{_PACKAGE}.clam:CLAMMB", _CLAM, "CLAM, one attention branch per class, instance clustering (Lu et al. 2021)",
        "as clam-sb",
        class_targets=True,
    ),
    AggregatorSpec(
        "transmil",
        f"{_PACKAGE}.transmil:TransMIL",
        {
            "hidden_dim": count(512),
            "heads": count(8),
            # 0: hidden_dim / 2, the reference's rule (256 at its hidden size of 512).
            "landmarks": Param(0, "an integer >= 1, or 0 for hidden_dim / 2", lambda v: v >= 0),
            "pinv_iterations": count(6),
            "residual_kernel": Param(33, "an odd integer >= 1, or 0 for none", lambda v: v == 0 or (v >= 1 and v % 2 == 1)),
            "dropout": rate(0.1),
        },
        "TransMIL: Nyström attention with PPEG position encoding (Shao et al. 2021)",
        "szc19990412/TransMIL models/TransMIL.py",
        check=_heads_divide_hidden,
    ),
    AggregatorSpec(
        "dsmil",
        f"{_PACKAGE}.dsmil:DSMIL",
        {"q_dim": count(128), "nonlinear_q": flag(True), "passing_v": flag(False), "dropout_v": rate(0.0)},
        "dual-stream MIL: max instance and attention to it (Li et al. 2021)",
        "binli123/dsmil-wsi dsmil.py and train_tcga.py",
    ),
    AggregatorSpec("meanpool", f"{_PACKAGE}.meanpool:MeanPoolMLP", _POOL, "mean of instance features, then an MLP (baseline)", "this project's"),
    AggregatorSpec("maxpool", f"{_PACKAGE}.maxpool:MaxPoolMLP", _POOL, "an MLP per instance, then the maximum (baseline)", "this project's"),
    AggregatorSpec("linear-probe", f"{_PACKAGE}.linear_probe:LinearProbe", {}, "a linear layer on the mean feature (baseline)", "no settings"),
):
    register_aggregator(_spec)
