"""The settings of each task type, and reading them from a workflow's ``task`` section.

Torch-free on purpose: the workflow's config models (``config.workflow``) check a task's
settings here when a workflow is loaded, and loading a workflow must not import torch. Each
task type has one frozen dataclass whose ``__post_init__`` is the single place its values are
checked; the task modules (``binary``, ``multiclass``, ...) import them from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from wsi_pipeline.errors import WSIPipelineError

# -- multiclass class names -------------------------------------------------------------

def class_key(value: Any) -> str:
    """A class label as the text it is compared by: integer-valued numbers without ``.0``."""
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if math.isfinite(value) and float(value).is_integer() else str(float(value))
    text = str(value).strip()
    return str(int(text)) if text.lstrip("+-").isdigit() else text


def sorted_classes(values: Iterable[Any]) -> tuple[str, ...]:
    """Distinct class keys, sorted numerically when all are integers, else as text."""
    keys = {class_key(v) for v in values}
    if all(k.lstrip("-").isdigit() for k in keys):
        return tuple(sorted(keys, key=int))
    return tuple(sorted(keys))


@dataclass(frozen=True)
class BinaryConfig:
    """Settings of a binary task.

    Attributes
    ----------
    label_column
        Cohort column with the label, 0 (negative) or 1 (positive).
    positive_name, negative_name
        What the classes are called in reports (display only).
    threshold
        Scores at or above it are predicted positive (accuracy, balanced accuracy).
    balanced
        Weight positives by ``n_negative / n_positive`` of the fit patients (True), or not
        (False, e.g. when the training loop balances by sampling instead).
    """

    label_column: str = "label"
    positive_name: str = "positive"
    negative_name: str = "negative"
    threshold: float = 0.5
    balanced: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise WSIPipelineError(f"threshold must be in (0, 1), got {self.threshold!r}", where="task.threshold",
                                   fix="set a probability between 0 and 1, e.g. 0.5")


@dataclass(frozen=True)
class MulticlassConfig:
    """Settings of a multiclass task.

    Attributes
    ----------
    label_column
        Cohort column with each patient's class (text or integers).
    classes
        The classes, in any order (they are sorted); empty: every class of the cohort.
    balanced
        Inverse-frequency class weights from the fit patients (True), or none (False).
    """

    label_column: str = "label"
    classes: tuple[str, ...] = ()
    balanced: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.classes, str):
            raise WSIPipelineError(f"classes must be a list, got the text {self.classes!r}", where="task.classes",
                                   fix="write the classes as a list, e.g. [tumour, stroma, immune]")
        raw = list(self.classes)
        classes = sorted_classes(raw)
        if len(classes) != len(raw):
            raise WSIPipelineError(f"classes lists a class twice: {raw!r}", where="task.classes", fix="list each class once")
        if len(classes) == 1:
            raise WSIPipelineError(f"a multiclass task needs at least 2 classes, got {raw!r}", where="task.classes",
                                   fix="list every class, or leave classes empty to take them from the cohort")
        object.__setattr__(self, "classes", classes)


REGRESSION_LOSSES = ("mse", "huber")


@dataclass(frozen=True)
class RegressionConfig:
    """Settings of a regression task.

    Attributes
    ----------
    target_column
        Cohort column with the numeric target.
    loss
        ``"mse"`` (mean squared error) or ``"huber"`` (quadratic within ``huber_delta``,
        linear beyond: robust to a few extreme targets).
    huber_delta
        Where the Huber loss turns linear, in standard units of the target.
    standardise
        Train on fit-set standardised targets (True) or on the raw values (False).
    stratify_bins
        Folds are stratified on this many quantile bins of the target.
    """

    target_column: str = "target"
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = 1.0
    standardise: bool = True
    stratify_bins: int = 4

    def __post_init__(self) -> None:
        if self.loss not in REGRESSION_LOSSES:
            raise WSIPipelineError(f"unknown regression loss {self.loss!r}", where="task.loss", fix=f"use one of {', '.join(REGRESSION_LOSSES)}")
        if not (isinstance(self.huber_delta, int | float) and math.isfinite(self.huber_delta) and self.huber_delta > 0):
            raise WSIPipelineError(f"huber_delta must be a positive number, got {self.huber_delta!r}", where="task.huber_delta",
                                   fix="set it in standard units of the target, e.g. 1.0")
        if not isinstance(self.stratify_bins, int) or self.stratify_bins < 1:
            raise WSIPipelineError(f"stratify_bins must be an integer >= 1, got {self.stratify_bins!r}", where="task.stratify_bins",
                                   fix="use e.g. 4 (quartiles); 1 turns stratification off")


SURVIVAL_LOSSES = ("cox", "discrete")


@dataclass(frozen=True)
class SurvivalConfig:
    """Settings of a survival task.

    Attributes
    ----------
    time_column
        Cohort column with the follow-up time (>= 0; any unit, used as given).
    event_column
        Cohort column with 1 = event observed, 0 = censored.
    loss
        ``"cox"`` (partial likelihood, one output) or ``"discrete"`` (discrete-time hazard,
        ``n_bins`` outputs).
    n_bins
        Time bins of the discrete-time model (ignored by ``cox``).
    """

    time_column: str = "pfs_months"
    event_column: str = "event"
    loss: Literal["cox", "discrete"] = "cox"
    n_bins: int = 4

    def __post_init__(self) -> None:
        if self.loss not in SURVIVAL_LOSSES:
            raise WSIPipelineError(f"unknown survival loss {self.loss!r}", where="task.loss", fix=f"use one of {', '.join(SURVIVAL_LOSSES)}")
        if not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise WSIPipelineError(f"n_bins must be an integer >= 2, got {self.n_bins!r}", where="task.n_bins",
                                   fix="use a few bins for a small cohort, e.g. 4; fewer bins than events per bin")
        if self.time_column == self.event_column:
            raise WSIPipelineError(f"time_column and event_column are both {self.time_column!r}", where="task.event_column",
                                   fix="name two different columns")


#: ``task.type`` -> its settings dataclass.
TASK_CONFIGS: dict[str, type] = {
    "binary": BinaryConfig,
    "multiclass": MulticlassConfig,
    "regression": RegressionConfig,
    "survival": SurvivalConfig,
}


#: Task types whose targets are one class index per bag (what CLAM's instance loss needs).
CLASS_TASKS = ("binary", "multiclass")


def task_types() -> list[str]:
    """The task types, sorted."""
    return sorted(TASK_CONFIGS)


def task_config(config: Mapping[str, Any] | Any) -> tuple[str, Any]:
    """The task type and its config dataclass, from a mapping ``{"type": ..., **settings}``.

    ``config`` may also be a task config dataclass (its type is looked up), or an object
    with ``model_dump()`` (a pydantic model such as the workflow's task section).
    ``type`` defaults to ``binary``.

    Raises
    ------
    WSIPipelineError
        For an unknown type or a setting the type does not have (naming it and the accepted ones).
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        for name, config_class in TASK_CONFIGS.items():
            if type(config) is config_class:
                return name, config
        raise TypeError(f"{type(config).__name__} is not a registered task config")
    if hasattr(config, "model_dump"):
        config = config.model_dump()
    if not isinstance(config, Mapping):
        raise TypeError(f"a task config must be a mapping, got {type(config).__name__}")
    settings = dict(config)
    kind = settings.pop("type", "binary")
    if kind not in TASK_CONFIGS:
        raise WSIPipelineError(f"unknown task type {kind!r}", where="task.type", fix=f"use one of {', '.join(task_types())}")
    config_class = TASK_CONFIGS[kind]
    accepted = [f.name for f in dataclasses.fields(config_class)]
    unknown = [key for key in settings if key not in accepted]
    if unknown:
        raise WSIPipelineError(
            f"{', '.join(map(repr, unknown))}: not a setting of a {kind} task",
            where=f"task.{unknown[0]}",
            fix=f"a {kind} task accepts {', '.join(accepted)}",
        )
    if isinstance(settings.get("classes"), list):
        settings["classes"] = tuple(settings["classes"])
    return kind, config_class(**settings)


def accepted_settings(kind: str) -> tuple[str, ...]:
    """The settings a task type accepts (its dataclass fields), in order."""
    return tuple(f.name for f in dataclasses.fields(TASK_CONFIGS[kind]))
