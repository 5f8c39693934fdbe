"""Regression: one output per bag, MSE or Huber loss on standardised targets.

Standardisation: :meth:`RegressionTask.fit` takes the mean and standard deviation (ddof=0)
of the fit patients' targets. The aggregator's output is the target in those standard units,
``z = (y - mean) / std``: the loss compares the output with ``z``, and
:meth:`RegressionTask.predictions` turns it back, ``prediction = output * std + mean``, in the
target's own units. A freshly initialised head (outputs near 0) then predicts the fit-set
mean, and the learning rate means the same for a target in days or in years. The Huber
``delta`` is in standard units (1.0 = one fit-set standard deviation). With
``standardise: false``, mean 0 and std 1 are used and nothing needs fitting.

``model_selection_score`` is minus the mean squared error in the target's units (monotone in
the standardised MSE, so either ranks epochs the same).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch import Tensor
from torch.nn import functional as F

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.tasks.base import (
    Outputs,
    TargetData,
    Task,
    nan_if_undefined,
    numeric_column,
    require_columns,
)
from wsi_pipeline.mil.tasks.settings import RegressionConfig


class RegressionTask(Task):
    """Regression of a numeric target per bag (see the module docstring).

    Parameters
    ----------
    config
        Settings; defaults when omitted.
    mean, std
        The fit set's target mean and standard deviation; :meth:`fit` computes them.
        ``None`` = not fitted (the loss refuses to run unless ``config.standardise`` is False).
    """

    name: ClassVar[str] = "regression"
    prediction_columns: ClassVar[tuple[str, ...]] = ("prediction",)
    metric_names: ClassVar[tuple[str, ...]] = ("mae", "rmse", "r2", "pearson", "spearman")
    selection_metric: ClassVar[str] = "neg_mse"
    plot_kind: ClassVar[str | None] = "scatter"
    metric_labels: ClassVar[dict[str, str]] = {
        "mae": "MAE", "rmse": "RMSE", "r2": "R\u00b2", "pearson": "Pearson r", "spearman": "Spearman \u03c1",
    }

    def __init__(self, config: RegressionConfig | None = None, *, mean: float | None = None, std: float | None = None) -> None:
        self.config = config or RegressionConfig()
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if std is not None and not (math.isfinite(std) and std > 0 and math.isfinite(mean)):
            raise ValueError(f"mean must be finite and std positive, got mean={mean!r}, std={std!r}")
        self._mean = None if mean is None else float(mean)
        self._std = None if std is None else float(std)

    def __repr__(self) -> str:
        return f"RegressionTask({self.config!r}, mean={self._mean!r}, std={self._std!r})"

    @property
    def n_outputs(self) -> int:
        return 1

    @property
    def target_columns(self) -> tuple[str, ...]:
        return (self.config.target_column,)

    @property
    def scale(self) -> tuple[float, float] | None:
        """``(mean, std)`` the outputs are in units of; ``(0, 1)`` when not standardising; None before :meth:`fit`."""
        if not self.config.standardise:
            return 0.0, 1.0
        return None if self._mean is None else (self._mean, self._std)

    @property
    def fitted_state(self) -> dict[str, Any]:
        return {"mean": self._mean, "std": self._std}

    @property
    def is_fitted(self) -> bool:
        return self.scale is not None

    def fit(self, targets: np.ndarray) -> Self:
        """Return a copy with the mean and standard deviation (ddof=0) of ``targets``.

        Raises
        ------
        WSIPipelineError
            With fewer than two fit patients or a constant target.
        """
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        std = float(y.std()) if len(y) else 0.0
        if len(y) < 2 or not std > 0:
            raise WSIPipelineError(
                f"the {len(y)} fit patients' targets do not vary (std {std:g}); regression needs varying targets",
                where=f"column '{self.config.target_column}'",
                fix="check the target column, or use more patients",
            )
        return type(self)(self.config, mean=float(y.mean()), std=std)

    def targets(self, data: TargetData) -> np.ndarray:
        """The target as float64, shape (n), in its own units.

        Raises
        ------
        WSIPipelineError
            For a missing column or an empty, non-numeric or infinite value.
        """
        values, _ = numeric_column(data, self.config.target_column, setting="target_column", meaning="the numeric target")
        return values

    def decode_targets(self, targets: np.ndarray) -> dict[str, np.ndarray]:
        return {self.config.target_column: np.asarray(targets, dtype=np.float64).reshape(-1)}

    def stratify_labels(self, targets: np.ndarray) -> np.ndarray:
        """Quantile bin of each target, numbered 0, 1, ... (at most ``stratify_bins`` bins).

        Inner edges are the ``k / stratify_bins`` quantiles of ``targets``; a value equal to
        an edge falls in the bin above it. Tied values can leave bins empty; the occupied
        bins are numbered consecutively from 0.
        """
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        q = self.config.stratify_bins
        if q <= 1 or len(y) == 0:
            return np.zeros(len(y), dtype=np.int64)
        edges = np.unique(np.quantile(y, np.arange(1, q) / q))
        bins = np.searchsorted(edges, y, side="right")
        return np.unique(bins, return_inverse=True)[1].astype(np.int64).reshape(-1)

    def loss(self, outputs: Tensor, targets: Tensor | np.ndarray) -> Tensor:
        """MSE, or Huber with ``huber_delta``, between the outputs and the standardised targets, averaged over bags."""
        self._require_fitted("the loss")
        mean, std = self.scale
        predicted = self._outputs_tensor(outputs)[:, 0]
        z = (torch.as_tensor(targets, dtype=predicted.dtype, device=predicted.device).reshape(-1) - mean) / std
        if self.config.loss == "huber":
            return F.huber_loss(predicted, z, delta=self.config.huber_delta)
        return F.mse_loss(predicted, z)

    def _values(self, outputs: Outputs) -> np.ndarray:
        self._require_fitted("predictions")
        mean, std = self.scale
        return self._outputs_array(outputs)[:, 0] * std + mean

    def model_selection_score(self, outputs: Outputs, targets: np.ndarray) -> float:
        """Minus the mean squared error, in the target's units."""
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        return -float(np.mean((self._values(outputs) - y) ** 2)) if len(y) else math.nan

    def predictions(self, outputs: Outputs) -> dict[str, np.ndarray]:
        """``prediction``: the output de-standardised to the target's units (float64)."""
        return {"prediction": self._values(outputs)}

    def metrics(self, frame: TargetData) -> dict[str, float]:
        """MAE, RMSE, R², Pearson's r and Spearman's rho of ``prediction`` against the target.

        NaN on an empty table; R² and the correlations are NaN with fewer than two patients
        and when the targets (or, for the correlations, the predictions) are constant.
        """
        target = self.config.target_column
        require_columns(frame, (target, "prediction"), self.name)
        y = np.asarray(frame[target], dtype=np.float64)
        p = np.asarray(frame["prediction"], dtype=np.float64)
        if len(y) == 0:
            return dict.fromkeys(self.metric_names, math.nan)
        varies = len(y) >= 2 and np.ptp(y) > 0
        correlates = varies and np.ptp(p) > 0
        return {
            "mae": float(mean_absolute_error(y, p)),
            "rmse": math.sqrt(mean_squared_error(y, p)),
            "r2": float(r2_score(y, p)) if varies else math.nan,
            "pearson": nan_if_undefined(pearsonr(y, p).statistic) if correlates else math.nan,
            "spearman": nan_if_undefined(spearmanr(y, p).statistic) if correlates else math.nan,
        }

    # -- reporting ----------------------------------------------------------------------
    def summary(self, frame: TargetData) -> str:
        y = np.asarray(frame[self.config.target_column], dtype=np.float64)
        return f"{self.config.target_column} mean {y.mean():.3g}, sd {y.std():.3g}" if len(y) else "no targets"

    def describe(self) -> str:
        return f"regression of '{self.config.target_column}' ({self.config.loss} loss on fit-set standardised targets)"
