"""Survival (time to event with right censoring): a Cox or a discrete-time hazard model.

Targets are ``(time, event)`` per patient, from two cohort columns (``pfs_months`` and
``event`` by default, the cohort table's follow-up columns). Every prediction carries
``risk``: higher means an earlier event. The C-index is Harrell's, from
:func:`lifelines.utils.concordance_index`, which expects *higher = longer survival* and is
therefore given ``-risk``.

Two losses, chosen by ``loss``:

``cox``
    One output per bag, the log-risk ``eta``. Loss: the negative log partial likelihood with
    Breslow's handling of ties, averaged over the batch's events::

        L = -1/n_events * sum_{i: event_i = 1} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)]

    (every bag still at risk at ``t_i``, tied events included, is in the risk set). It
    compares bags with each other, so a batch needs several bags and at least one event:
    :attr:`SurvivalTask.per_sample_loss` is False and one bag per step gives loss 0. A batch
    with no event has no term: its loss is defined as 0 (with zero, finite gradients). Adding
    a constant to every ``eta`` leaves the loss unchanged. ``risk`` = ``eta``.

``discrete``
    ``n_bins`` outputs per bag, the logits of the hazard ``h_k`` (probability of the event in
    bin ``k`` given survival to its start) -- the "logistic hazard" model of Gensheimer &
    Narasimhan (2019, nnet-survival) and Kvamme & Borgan (2021, pycox ``LogisticHazard``).
    Bin edges ``0 = e_0 < e_1 < ... < e_K`` are the ``k / K`` quantiles of the fit patients'
    event times (``e_K`` = their last event time); bin ``k`` is ``(e_k, e_{k+1}]`` (bin 0
    includes 0). A patient whose time falls in bin ``j`` contributes::

        event:     log h_j + sum_{k < j} log(1 - h_k)
        censored:            sum_{k < j} log(1 - h_k)

    i.e. a censored patient is counted as surviving the bins *before* the one they were
    censored in (pycox's convention of moving censoring times to the start of their
    interval; the conservative choice). Censored times after ``e_K`` survive all bins;
    events after ``e_K`` (possible outside the fit set) count in the last bin. Loss: minus
    the mean log-likelihood over the batch's bags. Predictions: the survival curve
    ``S_k = prod_{m <= k} (1 - h_m)`` at ``e_1 .. e_K``, summarised as ``rmst``, the mean
    survival time restricted to ``e_K`` (trapezoids between edges, i.e. events spread
    evenly within a bin), and ``risk = -rmst``.

Not reported: the integrated Brier score. It needs each patient's predicted survival curve
at arbitrary times and an inverse-probability-of-censoring weighting; lifelines and
scikit-learn ship no implementation for external predictions (scikit-survival is not a
dependency), and a Cox model's curve needs a baseline hazard estimated on the training
patients, which the predictions table does not carry. Only the C-index is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
import torch
from lifelines.utils import concordance_index
from torch import Tensor
from torch.nn import functional as F

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks.base import (
    Outputs,
    TargetData,
    Task,
    check,
    numeric_column,
    require_columns,
)
from wsi_pipeline.mil.tasks.settings import SurvivalConfig


class SurvivalTask(Task):
    """Survival prediction per bag (see the module docstring).

    Parameters
    ----------
    config
        Settings; defaults when omitted.
    edges
        Discrete-time model only: the bin edges ``e_1 < ... < e_K`` (``K = n_bins``, all > 0
        except possibly ``e_1``); :meth:`fit` computes them. ``None`` = not fitted.
    """

    name: ClassVar[str] = "survival"
    metric_names: ClassVar[tuple[str, ...]] = ("c_index",)
    selection_metric: ClassVar[str] = "c_index"
    optional_targets: ClassVar[bool] = True
    metric_labels: ClassVar[dict[str, str]] = {"c_index": "C-index (Harrell)"}

    def __init__(self, config: SurvivalConfig | None = None, *, edges: Sequence[float] | None = None) -> None:
        self.config = config or SurvivalConfig()
        if edges is not None:
            if self.config.loss != "discrete":
                raise ValueError("edges are for the discrete-time loss only")
            array = np.asarray(edges, dtype=np.float64)
            if array.shape != (self.config.n_bins,) or not np.isfinite(array).all() or array[0] < 0 or (np.diff(array) <= 0).any():
                raise ValueError(f"edges must be {self.config.n_bins} increasing finite times >= 0, got {edges!r}")
            edges = [float(e) for e in array]
        self._edges = edges

    def __repr__(self) -> str:
        return f"SurvivalTask({self.config!r}, edges={self._edges!r})"

    @property
    def discrete(self) -> bool:
        return self.config.loss == "discrete"

    @property
    def per_sample_loss(self) -> bool:  # type: ignore[override]  # depends on the loss
        return self.discrete

    @property
    def prediction_columns(self) -> tuple[str, ...]:  # type: ignore[override]  # depends on the loss
        return ("risk", "rmst") if self.discrete else ("risk",)

    @property
    def n_outputs(self) -> int:
        return self.config.n_bins if self.discrete else 1

    @property
    def target_columns(self) -> tuple[str, ...]:
        return (self.config.time_column, self.config.event_column)

    @property
    def edges(self) -> list[float] | None:
        """Discrete-time bin edges ``e_1 .. e_K`` (None for Cox, and before :meth:`fit`)."""
        return self._edges

    @property
    def fitted_state(self) -> dict[str, Any]:
        return {"edges": self._edges} if self.discrete else {}

    def fit(self, targets: np.ndarray) -> Self:
        """Return a copy fitted on the fit patients' ``(time, event)`` rows.

        Cox learns nothing (the check for an event still applies); the discrete-time model
        takes its bin edges from the quantiles of the event times.

        Raises
        ------
        WSIPipelineError
            With no event among the fit patients, or (discrete) event times too tied to give
            ``n_bins`` distinct edges.
        """
        time, event = _split(targets)
        event_times = time[event == 1]
        if len(event_times) == 0:
            raise WSIPipelineError(
                f"none of the {len(time)} fit patients has an event; a survival model cannot be trained",
                where=f"column '{self.config.event_column}'",
                fix="plan folds stratified by event, or check the event column (1 = event observed)",
            )
        if not self.discrete:
            return type(self)(self.config)
        k = self.config.n_bins
        edges = np.quantile(event_times, np.arange(1, k + 1) / k)
        if (np.diff(edges) <= 0).any():
            raise WSIPipelineError(
                f"the fit patients' {len(event_times)} event times give fewer than {k} distinct bin edges "
                f"({', '.join(f'{e:g}' for e in edges)})",
                where="task.n_bins",
                fix="use fewer time bins, or the cox loss",
            )
        return type(self)(self.config, edges=edges.tolist())

    def targets(self, data: TargetData) -> np.ndarray:
        """``(time, event)`` per patient, float64, shape (n, 2).

        Raises
        ------
        WSIPipelineError
            For a missing column; an empty, non-numeric, infinite or negative time; an event
            other than 0/1.
        """
        c = self.config
        time, ids = numeric_column(data, c.time_column, setting="time_column", meaning="the follow-up time")
        check(time < 0, ids, time, c.time_column, "is negative", f"write follow-up times >= 0 in '{c.time_column}'")
        event, ids = numeric_column(data, c.event_column, setting="event_column", meaning="the event indicator")
        check(~np.isin(event, (0.0, 1.0)), ids, event, c.event_column, "is not 0 or 1",
              f"encode '{c.event_column}' as 1 = event observed, 0 = censored")
        return np.column_stack([time, event])

    def decode_targets(self, targets: np.ndarray) -> dict[str, np.ndarray]:
        time, event = _split(targets)
        return {self.config.time_column: time, self.config.event_column: event.astype(np.int64)}

    def stratify_labels(self, targets: np.ndarray) -> np.ndarray:
        """The event indicator (int)."""
        return _split(targets)[1].astype(np.int64)

    # -- loss ---------------------------------------------------------------------------
    def loss(self, outputs: Tensor, targets: Tensor | np.ndarray) -> Tensor:
        """Cox negative log partial likelihood, or the discrete-time negative log-likelihood."""
        values = self._outputs_tensor(outputs)
        y = torch.as_tensor(targets, dtype=values.dtype, device=values.device).reshape(-1, 2)
        if y.shape[0] != values.shape[0]:
            raise ValueError(f"{values.shape[0]} outputs but {y.shape[0]} targets")
        time, event = y[:, 0], y[:, 1]
        if not self.discrete:
            return cox_loss(values[:, 0], time, event)
        self._require_fitted("the discrete-time loss")
        edges = torch.tensor(self._edges, dtype=values.dtype, device=values.device)
        return discrete_time_loss(values, time_bins(edges, time), event)

    # -- predictions and metrics --------------------------------------------------------
    def _risk_and_rmst(self, outputs: Outputs) -> tuple[np.ndarray, np.ndarray | None]:
        values = self._outputs_array(outputs)
        if not self.discrete:
            return values[:, 0], None
        self._require_fitted("predictions")
        survival = np.cumprod(1.0 / (1.0 + np.exp(values)), axis=1)  # 1 - sigmoid = sigmoid(-x)
        rmst = restricted_mean(survival, np.asarray(self._edges))
        return -rmst, rmst

    def predictions(self, outputs: Outputs) -> dict[str, np.ndarray]:
        """``risk`` (higher = earlier event); discrete-time also ``rmst`` (restricted mean survival time)."""
        risk, rmst = self._risk_and_rmst(outputs)
        return {"risk": risk} if rmst is None else {"risk": risk, "rmst": rmst}

    def model_selection_score(self, outputs: Outputs, targets: np.ndarray) -> float:
        """Harrell's C-index of ``risk``; NaN without comparable pairs."""
        time, event = _split(targets)
        return harrell_c(time, event, self._risk_and_rmst(outputs)[0])

    def metrics(self, frame: TargetData) -> dict[str, float]:
        """Harrell's C-index of ``risk`` (rows without time or event are left out; NaN without comparable pairs)."""
        c = self.config
        require_columns(frame, (c.time_column, c.event_column, "risk"), self.name)
        time = np.asarray(frame[c.time_column], dtype=np.float64)
        event = np.asarray(frame[c.event_column], dtype=np.float64)
        risk = np.asarray(frame["risk"], dtype=np.float64)
        followed = np.isfinite(time) & np.isfinite(event)
        return {"c_index": harrell_c(time[followed], event[followed], risk[followed])}

    # -- reporting ----------------------------------------------------------------------
    def describe(self) -> str:
        c = self.config
        model = "Cox partial likelihood" if not self.discrete else f"discrete-time hazard, {c.n_bins} bins"
        return f"survival ('{c.time_column}', '{c.event_column}'; {model})"

    def summary(self, frame: TargetData) -> str:
        n_events = self.counts(frame)["n_events"]
        return f"{n_events} events, {len(np.asarray(frame[self.config.event_column])) - n_events} censored"

    def counts(self, frame: TargetData) -> dict[str, Any]:
        """``n_events``: patients whose event was observed."""
        event = np.asarray(frame[self.config.event_column], dtype=np.float64)
        return {"n_events": int(np.nansum(event))}

    @property
    def follow_up_columns(self) -> tuple[str, str]:
        return self.target_columns  # type: ignore[return-value]  # (time, event)

    def risk_groups(self, frame: TargetData) -> tuple[np.ndarray, dict[bool, str]]:
        """High predicted risk (``risk`` at or above its median over the table) against low."""
        risk = np.asarray(frame["risk"], dtype=np.float64)
        median = float(np.median(risk)) if len(risk) else math.nan
        return risk >= median, {True: "high predicted risk (\u2265 median)", False: "low predicted risk (< median)"}


def _split(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def cox_loss(log_risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Negative Cox log partial likelihood (Breslow ties), averaged over events; 0 without events.

    Parameters
    ----------
    log_risk
        ``eta`` per bag, shape (B,).
    time, event
        Follow-up time and 1/0 event indicator per bag, shape (B,).
    """
    at_risk = time.unsqueeze(0) >= time.unsqueeze(1)  # [i, j]: bag j is at risk at t_i
    # Every row holds its own bag (j = i), so each log-sum-exp is finite; no host sync anywhere:
    # without events the sum is 0 and so is the loss (divided by 1), with zero gradients.
    log_denominator = torch.logsumexp(log_risk.unsqueeze(0).masked_fill(~at_risk, -math.inf), dim=1)
    return -((log_risk - log_denominator) * event).sum() / event.sum().clamp(min=1.0)


def time_bins(edges: Tensor, time: Tensor) -> Tensor:
    """Index ``j`` of the bin ``(e_j, e_{j+1}]`` holding each time: the number of edges below it (0 .. K)."""
    return torch.searchsorted(edges.contiguous(), time.contiguous(), right=False)


def discrete_time_loss(logits: Tensor, bins: Tensor, event: Tensor) -> Tensor:
    """Minus the mean discrete-time log-likelihood (see the module docstring).

    Parameters
    ----------
    logits
        Hazard logits, shape (B, K).
    bins
        Each bag's bin index in 0 .. K (K: censored after the last edge), shape (B,).
    event
        1/0 event indicator, shape (B,).
    """
    k = logits.shape[1]
    # An event after e_K counts in the last bin; a censored time after e_K survived every bin.
    bins = torch.where(event > 0, bins.clamp(max=k - 1), bins)
    survived = torch.arange(k, device=logits.device).unsqueeze(0) < bins.unsqueeze(1)  # bins fully survived
    log_survive = F.logsigmoid(-logits)  # log(1 - h)
    log_hazard = F.logsigmoid(logits).gather(1, bins.clamp(max=k - 1).unsqueeze(1)).squeeze(1)
    likelihood = (log_survive * survived).sum(dim=1) + event * log_hazard
    return -likelihood.mean()


def restricted_mean(survival: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean survival time up to the last edge, from ``S`` at ``edges`` (S = 1 at time 0), by trapezoids."""
    widths = np.diff(np.concatenate([[0.0], edges]))
    before = np.concatenate([np.ones((survival.shape[0], 1)), survival[:, :-1]], axis=1)
    return ((before + survival) / 2.0 * widths).sum(axis=1)


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index of ``risk`` (higher = earlier event); NaN when no pair is comparable."""
    if len(time) < 2 or not np.any(event == 1):
        return math.nan
    try:
        return float(concordance_index(time, -np.asarray(risk, dtype=np.float64), event))
    except ZeroDivisionError:  # lifelines: "No admissable pairs in the dataset."
        return math.nan
