"""Prediction tasks: what the MIL stage predicts, one module per task type.

``base`` (the :class:`Task` interface and shared helpers), ``binary``, ``multiclass``,
``regression``, ``survival``, and ``registry`` (``task.type`` -> task; :func:`build_task`).
See :mod:`wsi_pipeline.mil.tasks.base` for a task's life cycle in a run.
"""

from wsi_pipeline.mil.tasks.base import Task
from wsi_pipeline.mil.tasks.binary import BinaryConfig, BinaryTask
from wsi_pipeline.mil.tasks.multiclass import MulticlassConfig, MulticlassTask
from wsi_pipeline.mil.tasks.registry import (
    TASKS,
    available_tasks,
    build_task,
    task_config,
)
from wsi_pipeline.mil.tasks.regression import RegressionConfig, RegressionTask
from wsi_pipeline.mil.tasks.survival import SurvivalConfig, SurvivalTask

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
]
