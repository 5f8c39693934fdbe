"""Task types by name, and building a task from the workflow's ``task`` section."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks.base import Task
from wsi_pipeline.mil.tasks.binary import BinaryConfig, BinaryTask
from wsi_pipeline.mil.tasks.multiclass import MulticlassConfig, MulticlassTask
from wsi_pipeline.mil.tasks.regression import RegressionConfig, RegressionTask
from wsi_pipeline.mil.tasks.survival import SurvivalConfig, SurvivalTask

#: ``task.type`` -> (task class, its config dataclass).
TASKS: dict[str, tuple[type[Task], type]] = {
    "binary": (BinaryTask, BinaryConfig),
    "multiclass": (MulticlassTask, MulticlassConfig),
    "regression": (RegressionTask, RegressionConfig),
    "survival": (SurvivalTask, SurvivalConfig),
}


def available_tasks() -> list[str]:
    """The registered task types, sorted."""
    return sorted(TASKS)


def task_config(config: Mapping[str, Any] | Any) -> tuple[str, Any]:
    """The task type and its config dataclass, from a mapping ``{"type": ..., **settings}``.

    ``config`` may also be a task config dataclass (its type is looked up), or an object
    with ``model_dump()`` (a pydantic model such as the workflow's ``TaskConfig``).
    ``type`` defaults to ``binary``.

    Raises
    ------
    WSIPipelineError
        For an unknown type or a setting the type does not have (naming it and the accepted ones).
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        for name, (_, config_class) in TASKS.items():
            if type(config) is config_class:
                return name, config
        raise TypeError(f"{type(config).__name__} is not a registered task config")
    if hasattr(config, "model_dump"):
        config = config.model_dump()
    if not isinstance(config, Mapping):
        raise TypeError(f"a task config must be a mapping, got {type(config).__name__}")
    settings = dict(config)
    kind = settings.pop("type", "binary")
    if kind not in TASKS:
        raise WSIPipelineError(f"unknown task type {kind!r}", where="task.type", fix=f"use one of {', '.join(available_tasks())}")
    config_class = TASKS[kind][1]
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


def build_task(config: Mapping[str, Any] | Any, *, fit_targets: np.ndarray | None = None) -> Task:
    """Build a task from its config (see :func:`task_config`), fitted when ``fit_targets`` are given.

    Parameters
    ----------
    config
        ``{"type": "binary" | "multiclass" | "regression" | "survival", **settings}``, a task
        config dataclass, or a pydantic model of one.
    fit_targets
        The fit patients' encoded targets (:meth:`Task.targets`); ``task.fit(fit_targets)``
        is returned when given. A multiclass task needs its classes (configured, or
        :meth:`Task.bind`) before it can read or fit targets.

    Returns
    -------
    Task
        The task.
    """
    kind, settings = task_config(config)
    task = TASKS[kind][0](settings)
    return task if fit_targets is None else task.fit(fit_targets)
