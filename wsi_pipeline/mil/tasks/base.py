"""What every prediction task provides, and the helpers the task modules share.

A task object owns everything that depends on *what* is predicted: how many outputs the
aggregator needs, which cohort columns hold the target (and how they are checked), the loss,
what the predictions file gets from the outputs, the metrics scoring reports, the number
early stopping compares, and the labels folds are stratified on. Aggregators, training, the
predictions file and scoring take a task instead of assuming binary classification.

Life cycle of a task in a run::

    task = build_task({"type": "survival", "loss": "cox"})   # from the workflow's task section
    task = task.bind(cohort)            # whole-cohort facts (a multiclass task's class list)
    y = task.targets(cohort)            # checked, encoded targets, one row per patient
    strata = task.stratify_labels(y)    # what the fold plan stratifies on
    fitted = task.fit(y[fit_rows])      # per fold: fit-set statistics (class weights, ...)
    loss = fitted.loss(outputs, y[batch_rows])
    rows = {**fitted.decode_targets(y[test_rows]), **fitted.predictions(test_outputs)}
    fitted.metrics(pandas.DataFrame(rows))

``bind`` and ``fit`` return new objects and never change the task they are called on, so one
task can be shared by folds trained in parallel. What ``fit`` learned is
:attr:`Task.fitted_state` (JSON-able); ``type(task)(task.config, **task.fitted_state)``
rebuilds the fitted task, e.g. next to a checkpoint.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self, TypeAlias

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from wsi_pipeline.errors import WSIPipelineError

#: What :meth:`Task.targets` and :meth:`Task.metrics` read: a data frame, or a mapping of
#: column name -> values (one per patient).
TargetData: TypeAlias = pd.DataFrame | Mapping[str, Sequence[Any] | np.ndarray]
#: Aggregator outputs: a tensor or array of shape (B, n_outputs).
Outputs: TypeAlias = Tensor | np.ndarray

_EXAMPLES = 5  # how many offending patients an error message lists


class Task(ABC):
    """A prediction task: outputs, targets, loss, predictions, metrics, selection and strata.

    Subclasses set the class attributes and implement the abstract methods. Every method
    that takes ``outputs`` expects one row per bag, shape ``(B, n_outputs)``; a 1-D array is
    read as ``(B, 1)`` when ``n_outputs == 1`` and as one bag ``(1, n_outputs)`` otherwise.

    Attributes
    ----------
    name
        The registry name, the value of ``task.type`` in a workflow.
    config
        The task's settings (a frozen dataclass, one per task type).
    prediction_columns
        Columns :meth:`predictions` returns, in order.
    metric_names
        Keys of :meth:`metrics`, in the order a report lists them.
    selection_metric
        Name of what :meth:`model_selection_score` returns (for training histories).
    per_sample_loss
        True when the loss of a batch is the mean of its bags' losses, so training on one bag
        per step optimises the same objective. False for the Cox loss, which compares the bags
        of a batch with each other (a batch needs several bags and at least one event).
    optional_targets
        True when patients without a target are excluded from training with a reason (a
        survival task: no follow-up) instead of being an error of the cohort table.
    """

    name: ClassVar[str]
    prediction_columns: ClassVar[tuple[str, ...]]
    metric_names: ClassVar[tuple[str, ...]]
    selection_metric: ClassVar[str]
    per_sample_loss: ClassVar[bool] = True
    #: Whether a patient without a target is left out of training (with the reason recorded)
    #: rather than an error in the cohort table: a survival task's patients without follow-up.
    optional_targets: ClassVar[bool] = False

    config: Any

    # -- shape --------------------------------------------------------------------------
    @property
    @abstractmethod
    def n_outputs(self) -> int:
        """Outputs the aggregator's head must produce per bag."""

    @property
    @abstractmethod
    def target_columns(self) -> tuple[str, ...]:
        """Cohort-table columns that hold the target, as configured."""

    # -- life cycle ---------------------------------------------------------------------
    def bind(self, data: TargetData) -> Self:
        """Return a task completed with what the whole labelled cohort fixes before any fold.

        Only a multiclass task without configured classes learns something here (its class
        list); every other task returns itself. Class names are not a leak: the fold-dependent
        statistics come from :meth:`fit` on the fit patients only.
        """
        return self

    @abstractmethod
    def fit(self, targets: np.ndarray) -> Self:
        """Return a copy fitted on the fit patients' targets (the output of :meth:`targets`).

        Raises
        ------
        WSIPipelineError
            When the fit patients cannot train the task (one class only, no events, ...).
        """

    @property
    @abstractmethod
    def fitted_state(self) -> dict[str, Any]:
        """What :meth:`fit` learned, JSON-able; the constructor's keyword arguments."""

    @property
    def is_fitted(self) -> bool:
        """Whether the loss has every statistic it needs (some settings need none)."""
        return all(value is not None for value in self.fitted_state.values())

    # -- targets ------------------------------------------------------------------------
    @abstractmethod
    def targets(self, data: TargetData) -> np.ndarray:
        """Read, check and encode the targets of every row of ``data``.

        Raises
        ------
        WSIPipelineError
            Naming the column and the patients, for a missing column or a bad value.
        """

    @abstractmethod
    def decode_targets(self, targets: np.ndarray) -> dict[str, np.ndarray]:
        """The target columns (:attr:`target_columns`) for encoded targets: the inverse of :meth:`targets`."""

    @abstractmethod
    def stratify_labels(self, targets: np.ndarray) -> np.ndarray:
        """One discrete label per patient for stratified fold plans."""

    # -- training -----------------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor | np.ndarray) -> Tensor:
        """The training objective of a batch, a scalar tensor (lower is better)."""

    @abstractmethod
    def model_selection_score(self, outputs: Outputs, targets: np.ndarray) -> float:
        """What early stopping compares beside the loss; higher is better, NaN when undefined."""

    # -- evaluation ---------------------------------------------------------------------
    @abstractmethod
    def predictions(self, outputs: Outputs) -> dict[str, np.ndarray]:
        """The prediction columns (:attr:`prediction_columns`) for a batch of outputs."""

    @abstractmethod
    def metrics(self, frame: TargetData) -> dict[str, float]:
        """Point estimates of :attr:`metric_names` on a predictions table; NaN when undefined.

        ``frame`` holds the target columns (:attr:`target_columns`) and the prediction
        columns (:attr:`prediction_columns`), one row per patient.
        """

    # -- reporting ----------------------------------------------------------------------
    #: How a report names each metric (a metric missing here is shown by its key).
    metric_labels: ClassVar[dict[str, str]] = {}
    #: The figure a report draws of the pooled predictions: ``"roc"`` (binary), ``"roc_ovr"``
    #: (one-vs-rest ROC per class), ``"scatter"`` (predicted against true), or ``None``.
    plot_kind: ClassVar[str | None] = None

    def describe(self) -> str:
        """One line naming the task for reports, e.g. ``binary classification of 'label'``."""
        return f"{self.name} ({', '.join(self.target_columns)})"

    def check_predictions(self, frame: TargetData) -> None:
        """Check the prediction columns of a predictions table (present, numeric, in range).

        Raises
        ------
        WSIPipelineError
            Naming the column and example rows.
        """
        require_columns(frame, self.prediction_columns, self.name)
        for name in self.prediction_columns:
            numeric_column(frame, name, setting="", meaning=f"the {self.name} task's prediction")

    def counts(self, frame: TargetData) -> dict[str, Any]:
        """Counts a report shows beside the metrics (e.g. positives); none by default."""
        return {}

    def summary(self, frame: TargetData) -> str:
        """The patients' targets in a few words, for the dry run's plan (e.g. ``6 responder, 14 non-responder``)."""
        return ", ".join(f"{key} {value}" for key, value in self.counts(frame).items())

    @property
    def follow_up_columns(self) -> tuple[str, str]:
        """The (time, event) columns Kaplan-Meier curves read: the cohort's optional follow-up by default."""
        return ("pfs_months", "event")

    def risk_groups(self, frame: TargetData) -> tuple[np.ndarray, dict[bool, str]] | None:
        """Two predicted groups (True/False per row) whose follow-up a report compares, and their names.

        ``None`` when the task has no natural two-group split of its predictions (then no
        Kaplan-Meier curves or log-rank test are drawn).
        """
        return None

    # -- helpers for subclasses ---------------------------------------------------------
    def _outputs_tensor(self, outputs: Outputs) -> Tensor:
        """``outputs`` as a float tensor of shape (B, n_outputs); half precision is upcast."""
        tensor = torch.as_tensor(outputs)
        if not tensor.is_floating_point():
            tensor = tensor.float()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()  # losses under autocast: keep the reductions in float32
        if tensor.ndim == 1:
            tensor = tensor.unsqueeze(-1) if self.n_outputs == 1 else tensor.unsqueeze(0)
        if tensor.ndim != 2 or tensor.shape[1] != self.n_outputs:
            raise ValueError(f"{self.name} task expects outputs of shape (B, {self.n_outputs}); got {tuple(tensor.shape)}")
        return tensor

    def _outputs_array(self, outputs: Outputs) -> np.ndarray:
        """``outputs`` as a float64 numpy array of shape (B, n_outputs), detached."""
        if isinstance(outputs, Tensor):
            outputs = outputs.detach().cpu()
        return self._outputs_tensor(outputs).double().numpy()

    def _param_error(self, field: str, what: str, fix: str) -> WSIPipelineError:
        return WSIPipelineError(what, where=f"task.{field}", fix=fix)

    def _require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{self.name} task: {what} needs fit-set statistics; call task.fit(fit targets) first")


# -- reading columns ------------------------------------------------------------------------


def column(data: TargetData, name: str, *, setting: str, meaning: str) -> tuple[np.ndarray, list[str]]:
    """One column of ``data`` and a name per row for messages.

    Parameters
    ----------
    data
        A data frame or a mapping column -> values.
    name
        The column to read.
    setting
        The task setting that names the column (e.g. ``label_column``), for the fix message.
    meaning
        What the column holds, for the messages.

    Returns
    -------
    values, row_names
        The column as a numpy array (object dtype for text), and ``patient <id>`` for each
        row when ``data`` has a ``patient_id`` column, else ``row <i>``.

    Raises
    ------
    WSIPipelineError
        If the column is absent (naming it and the columns present).
    """
    columns = list(data.columns) if isinstance(data, pd.DataFrame) else list(data)
    if name not in columns:
        raise WSIPipelineError(
            f"no column '{name}' ({meaning}); columns present: {', '.join(map(str, columns)) or 'none'}",
            where=f"column '{name}'",
            fix=f"add a '{name}' column, or set task.{setting} to the column that holds {meaning}",
        )
    values = np.asarray(data[name])
    if values.ndim != 1:
        raise WSIPipelineError(f"column '{name}' is not one value per row (shape {values.shape})", where=f"column '{name}'",
                               fix="give one value per patient")
    if "patient_id" in columns:
        ids = [f"patient {p}" for p in np.asarray(data["patient_id"])]
    else:
        index = data.index if isinstance(data, pd.DataFrame) else range(len(values))
        ids = [f"row {i}" for i in index]
    return values, ids


def numeric_column(data: TargetData, name: str, *, setting: str, meaning: str) -> tuple[np.ndarray, list[str]]:
    """A column as float64, every value present and finite (else an error naming the rows)."""
    raw, ids = column(data, name, setting=setting, meaning=meaning)
    values = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    missing = pd.isna(pd.Series(raw, dtype=object)).to_numpy()
    check(missing, ids, raw, name, "is empty", f"fill in '{name}' ({meaning}) for every patient, or drop those patients")
    check(np.isnan(values) & ~missing, ids, raw, name, "is not a number", f"write numbers in '{name}' ({meaning})")
    check(~np.isfinite(values) & ~np.isnan(values), ids, raw, name, "is infinite", f"write finite numbers in '{name}'")
    return values, ids


def check(bad: np.ndarray, ids: Sequence[str], values: np.ndarray, name: str, problem: str, fix: str) -> None:
    """Raise a :class:`WSIPipelineError` naming the column and example rows where ``bad``."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        rows = np.flatnonzero(bad)
        examples = ", ".join(f"{ids[i]}: {values[i]!r}" for i in rows[:_EXAMPLES])
        more = f" and {len(rows) - _EXAMPLES} more" if len(rows) > _EXAMPLES else ""
        raise WSIPipelineError(
            f"column '{name}' {problem} for {len(rows)} patient(s), e.g. {examples}{more}",
            where=f"column '{name}'",
            fix=fix,
        )


def require_columns(frame: TargetData, columns: Sequence[str], task: str) -> None:
    """Raise if a predictions table lacks one of ``columns``."""
    present = list(frame.columns) if isinstance(frame, pd.DataFrame) else list(frame)
    missing = [c for c in columns if c not in present]
    if missing:
        raise WSIPipelineError(
            f"the predictions table lacks column(s) {', '.join(missing)} that a {task} task is scored on; "
            f"columns present: {', '.join(map(str, present))}",
            where="predictions table",
            fix=f"write the target and prediction columns of the {task} task ({', '.join(columns)})",
        )


def is_missing(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """True where a value is absent (None, NaN, pandas' NA, an empty string)."""
    series = pd.Series(np.asarray(values, dtype=object).reshape(-1), dtype=object)
    return (series.isna() | series.map(lambda v: isinstance(v, str) and not v.strip())).to_numpy(dtype=bool)


def nan_if_undefined(value: float) -> float:
    """A metric value as a plain float, NaN for anything not finite."""
    value = float(value)
    return value if math.isfinite(value) else math.nan
