"""Task types by name, and building a task from the workflow's ``task`` section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from wsi_pipeline.mil.tasks.base import Task
from wsi_pipeline.mil.tasks.binary import BinaryTask
from wsi_pipeline.mil.tasks.multiclass import MulticlassTask
from wsi_pipeline.mil.tasks.regression import RegressionTask
from wsi_pipeline.mil.tasks.settings import TASK_CONFIGS, task_config, task_types
from wsi_pipeline.mil.tasks.survival import SurvivalTask

#: ``task.type`` -> (task class, its config dataclass).
TASKS: dict[str, tuple[type[Task], type]] = {
    "binary": (BinaryTask, TASK_CONFIGS["binary"]),
    "multiclass": (MulticlassTask, TASK_CONFIGS["multiclass"]),
    "regression": (RegressionTask, TASK_CONFIGS["regression"]),
    "survival": (SurvivalTask, TASK_CONFIGS["survival"]),
}


def available_tasks() -> list[str]:
    """The registered task types, sorted."""
    return task_types()


def build_task(config: Mapping[str, Any] | Any, *, fit_targets: np.ndarray | None = None) -> Task:
    """Build a task from its config (see :func:`~wsi_pipeline.mil.tasks.settings.task_config`), fitted when ``fit_targets`` are given.

    Parameters
    ----------
    config
        ``{"type": "binary" | "multiclass" | "regression" | "survival", **settings}``, a task
        config dataclass, or a pydantic model of one (the workflow's ``task`` section).
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


def workflow_task(workflow: Any) -> Task:
    """The task of a workflow preset: its ``task`` section with the scoring settings the type takes.

    Parameters
    ----------
    workflow
        A :class:`~wsi_pipeline.config.workflow.WorkflowPreset` (its ``task_settings()``).

    Returns
    -------
    Task
        The task, neither bound nor fitted (the cohort loader binds it, each fold fits it).
    """
    return build_task(workflow.task_settings())


__all__ = ["TASKS", "available_tasks", "build_task", "task_config", "workflow_task"]
