"""Patients' targets as the MIL functions take them: raw cohort values by patient id, encoded by the task.

Training tasks carry the targets of their fold's patients as a small mapping, patient id ->
the raw values of the task's target columns (one value for a label or a number, a
``(time, event)`` tuple for survival): plain, picklable values, never arrays. The task reads,
checks and encodes them (:meth:`~wsi_pipeline.mil.tasks.base.Task.targets`) where they are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks.base import Task


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (JSON-able, and hashed the same everywhere)."""
    return value.item() if isinstance(value, np.generic) else value


def patient_targets(task: Task, patients: pd.DataFrame, ids: Iterable[str] | None = None) -> dict[str, Any]:
    """Patient id -> raw target values, from a cohort's one-row-per-patient table.

    Parameters
    ----------
    task
        The task; its :attr:`~wsi_pipeline.mil.tasks.base.Task.target_columns` are read.
    patients
        One row per patient with ``patient_id`` and the target columns (``Cohort.patients``).
    ids
        The patients wanted (default: every row), in the order of the result.

    Returns
    -------
    dict
        One value per patient for a one-column target, else a tuple in column order.
    """
    columns = list(task.target_columns)
    table = patients.set_index("patient_id")
    wanted = list(table.index) if ids is None else list(ids)
    result: dict[str, Any] = {}
    for pid in wanted:
        values = tuple(_plain(table.at[pid, c]) for c in columns)
        result[str(pid)] = values[0] if len(values) == 1 else values
    return result


def target_frame(task: Task, targets: Mapping[str, Any], ids: Sequence[str]) -> dict[str, list[Any]]:
    """The task's target columns for ``ids`` (plus ``patient_id``, which error messages name).

    Raises
    ------
    WSIPipelineError
        For a patient without a target, or a multi-column target of the wrong length.
    """
    columns = list(task.target_columns)
    frame: dict[str, list[Any]] = {"patient_id": list(ids), **{c: [] for c in columns}}
    for pid in ids:
        if pid not in targets:
            raise WSIPipelineError("no target for this patient", where=f"patient {pid}",
                                   fix=f"give the patient's {', '.join(columns)} in the cohort table")
        value = targets[pid]
        values = (value,) if len(columns) == 1 else tuple(value)
        if len(values) != len(columns):
            raise WSIPipelineError(f"target {value!r} does not have one value per column ({', '.join(columns)})",
                                   where=f"patient {pid}", fix=f"give {len(columns)} values")
        for column, item in zip(columns, values):
            frame[column].append(item)
    return frame


def encode_targets(task: Task, targets: Mapping[str, Any], ids: Sequence[str]) -> np.ndarray:
    """The encoded targets of ``ids``, in order: ``task.targets`` of :func:`target_frame`.

    Raises
    ------
    WSIPipelineError
        For a missing target or a value the task rejects (naming the column and the patients).
    """
    return task.targets(target_frame(task, targets, ids))
