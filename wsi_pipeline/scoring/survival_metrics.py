"""Survival scoring beyond the C-index: predicted risk groups, their Cox hazard ratio and the cut-off between them.

A survival model's risk splits patients into a high- and a low-risk group. Where the cut-off
comes from matters: fixed on validation rows it is a prediction; taken as the median of the
scored rows' own risk it is a description of those rows (it uses no outcome, so the log-rank
test stays valid, but the groups are always half and half). :func:`risk_cutoff` takes the
validation rows' median when there are any, else the scored rows' median, and says which.

The hazard ratio of the high-risk group is a Cox proportional-hazards fit (lifelines'
``CoxPHFitter``) of the group indicator; its interval is the fit's Wald interval, not a
bootstrap. With several rows per patient (slides), the fit's robust (sandwich) variance is
clustered on the patient, so correlated slides do not narrow the interval.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

#: metrics.json's key of a survival model's risk-group cut-off (not a metric).
RISK_GROUPS_KEY = "risk_groups"
#: How each cut-off rule is written in the report.
CUTOFF_RULES = {
    "validation": "the median predicted risk of the validation rows",
    "median": "the median predicted risk of the scored rows (no validation rows)",
}


@dataclass(frozen=True)
class RiskCutoff:
    """Where high predicted risk starts.

    Attributes
    ----------
    value
        Rows with ``risk >= value`` are the high-risk group.
    rule
        ``validation`` (median of validation rows) or ``median`` (median of the scored rows).
    """

    value: float
    rule: str

    def as_dict(self) -> dict[str, Any]:
        """``{"cutoff", "rule", "description"}`` for metrics.json."""
        return {"cutoff": float(self.value), "rule": self.rule, "description": CUTOFF_RULES[self.rule]}

    def groups(self, risk: ArrayLike) -> np.ndarray:
        """True where a row is in the high-risk group."""
        return np.asarray(risk, dtype=np.float64) >= self.value

    def labels(self) -> dict[bool, str]:
        """Display names of the two groups."""
        where = "validation median" if self.rule == "validation" else "median"
        return {True: f"high predicted risk (\u2265 {where})", False: f"low predicted risk (< {where})"}


def risk_cutoff(scored_risk: ArrayLike, validation_risk: ArrayLike | None = None) -> RiskCutoff:
    """The cut-off between predicted risk groups: the validation median, else the scored rows' median.

    Parameters
    ----------
    scored_risk
        Risk of the scored rows.
    validation_risk
        Risk of the validation rows, when there are any.

    Returns
    -------
    RiskCutoff
        The cut-off and its rule.
    """
    validation = None if validation_risk is None else np.asarray(validation_risk, dtype=np.float64)
    if validation is not None and validation.size:
        return RiskCutoff(float(np.median(validation)), "validation")
    scored = np.asarray(scored_risk, dtype=np.float64)
    return RiskCutoff(float(np.median(scored)) if scored.size else math.nan, "median")


def hazard_ratio(
    time: ArrayLike,
    event: ArrayLike,
    high_risk: ArrayLike,
    *,
    clusters: ArrayLike | None = None,
    level: float = 0.95,
) -> dict[str, float | None]:
    """Cox hazard ratio of the high-risk group against the low-risk group, with its Wald interval.

    Parameters
    ----------
    time
        Follow-up time per row (finite, >= 0).
    event
        1 = event observed, 0 = censored.
    high_risk
        True for rows of the high-risk group.
    clusters
        The patient of each row when a patient has several rows: the interval then uses the
        robust variance clustered on patients.
    level
        Confidence level of the interval.

    Returns
    -------
    dict
        ``{"value", "ci_low", "ci_high"}``: ``exp(beta)`` and ``exp`` of its interval (lifelines'
        ``CoxPHFitter(alpha=1 - level)``, Efron ties); all ``None`` when undefined (a group
        empty, no event, or the fit does not converge, e.g. every event in one group).
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    undefined: dict[str, float | None] = {"value": None, "ci_low": None, "ci_high": None}
    frame = pd.DataFrame({"time": np.asarray(time, dtype=np.float64), "event": np.asarray(event, dtype=np.float64),
                          "high": np.asarray(high_risk, dtype=bool).astype(np.float64)})
    if frame.empty or frame["high"].nunique() < 2 or frame["event"].sum() == 0:
        return undefined
    options: dict[str, Any] = {}
    if clusters is not None:
        frame["cluster"] = np.asarray(clusters).astype(str)
        options = {"cluster_col": "cluster"}
    with warnings.catch_warnings():
        # Near-separation warns and gives a huge ratio; the checks below decide whether it is usable.
        warnings.simplefilter("ignore")
        try:
            fit = CoxPHFitter(alpha=1.0 - level).fit(frame, duration_col="time", event_col="event", **options)
        except (ConvergenceError, np.linalg.LinAlgError, ValueError):
            return undefined
    summary = fit.summary.loc["high"]
    values = [float(summary["exp(coef)"]), float(summary[f"exp(coef) lower {level * 100:g}%"]),
              float(summary[f"exp(coef) upper {level * 100:g}%"])]
    if not all(math.isfinite(v) and 0 < v < 1e6 for v in values):
        return undefined
    return dict(zip(("value", "ci_low", "ci_high"), values, strict=True))
