"""Prediction tasks: what the MIL stage predicts, one module per task type.

``base`` (the :class:`Task` interface and shared helpers), ``settings`` (each type's settings,
torch-free, checked when a workflow loads), ``binary``, ``multiclass``, ``regression``,
``survival``, and ``registry`` (``task.type`` -> task; :func:`build_task`). See
:mod:`wsi_pipeline.mil.tasks.base` for a task's life cycle in a run.

Names load on first use: the workflow's config models import ``settings`` to check a task
section, and that must not import torch (which the task modules do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_pipeline.lazy_exports import lazy_exports

_EXPORTS = {
    "Task": "base",
    "BinaryTask": "binary",
    "MulticlassTask": "multiclass",
    "RegressionTask": "regression",
    "SurvivalTask": "survival",
    "BinaryConfig": "settings",
    "MulticlassConfig": "settings",
    "RegressionConfig": "settings",
    "SurvivalConfig": "settings",
    "task_config": "settings",
    "TASKS": "registry",
    "available_tasks": "registry",
    "build_task": "registry",
    "workflow_task": "registry",
}

__all__ = [
    "TASKS",
    "BinaryConfig",
    "BinaryTask",
    "MulticlassConfig",
    "MulticlassTask",
    "RegressionConfig",
    "RegressionTask",
    "SurvivalConfig",
    "SurvivalTask",
    "Task",
    "available_tasks",
    "build_task",
    "task_config",
    "workflow_task",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from wsi_pipeline.mil.tasks.base import Task
    from wsi_pipeline.mil.tasks.binary import BinaryTask
    from wsi_pipeline.mil.tasks.multiclass import MulticlassTask
    from wsi_pipeline.mil.tasks.registry import (
        TASKS,
        available_tasks,
        build_task,
        workflow_task,
    )
    from wsi_pipeline.mil.tasks.regression import RegressionTask
    from wsi_pipeline.mil.tasks.settings import (
        BinaryConfig,
        MulticlassConfig,
        RegressionConfig,
        SurvivalConfig,
        task_config,
    )
    from wsi_pipeline.mil.tasks.survival import SurvivalTask


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
