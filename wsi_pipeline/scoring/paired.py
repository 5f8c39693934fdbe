"""A paired test of one metric between two models, possibly from different runs, on the patients both scored.

Two runs compared on the same patients have correlated errors, so their difference is tested
on those patients together, never by comparing two independent intervals. The pairing is on the
*intersection* of the two prediction tables' units (patients, or slides of slide-level tables)
present in every repeat of both. It is refused -- with the reason, never a wrong p -- when the
tables disagree on the truth of any shared patient (two cohorts that reuse ids, or a relabelled
cohort): then the "same patients" are not the same.

The test (:class:`PairedResult`):

- **DeLong** (:mod:`wsi_pipeline.scoring.delong`) for a binary AUC with one repeat and one row
  per patient on each side;
- otherwise a **paired bootstrap** of the difference in the metric: each resample draws patients
  once (with all their slides) and applies the draw to both tables and every repeat of each;
  a side's statistic is its metric averaged over its repeats, as in ``metrics.json``. The
  two-sided p is that of :func:`~wsi_pipeline.scoring.comparison.bootstrap_p_value`.

The bootstrap is computed either way, so both p-values are reported; the named test's is the one
a leaderboard shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.binary import (
    BINARY_METRICS,
    auc_weighted,
    binary_metric_arrays,
)
from wsi_pipeline.scoring.comparison import bootstrap_p_value
from wsi_pipeline.scoring.delong import delong_test
from wsi_pipeline.scoring.predictions import REPEAT_COLUMN, SLIDE_COLUMN, unit_columns
from wsi_pipeline.scoring.resample import bootstrap_weighted

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

DELONG = "DeLong"
BOOTSTRAP = "paired bootstrap"
_EXAMPLES = 5


@dataclass(frozen=True)
class PairedResult:
    """The test of metric(a) - metric(b) on the shared patients, or why there is none.

    Attributes
    ----------
    n_patients
        Patients both tables scored (in every repeat).
    test
        :data:`DELONG` or :data:`BOOTSTRAP`: whose p is ``p_value``; None when refused.
    p_value
        The named test's two-sided p.
    difference
        ``{"value", "ci_low", "ci_high"}`` of metric(a) - metric(b) on the shared patients
        (DeLong's normal interval with DeLong, the bootstrap's percentile interval otherwise).
    bootstrap_p, delong_p
        Both p-values, when computed.
    refused
        Why the models were not paired (None when they were).
    """

    n_patients: int
    test: str | None = None
    p_value: float | None = None
    difference: dict[str, float | None] | None = None
    bootstrap_p: float | None = None
    delong_p: float | None = None
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def paired_metric_test(
    a: pd.DataFrame,
    b: pd.DataFrame,
    task_a: Task,
    task_b: Task,
    metric: str,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Test metric(a) - metric(b) on the patients both tables scored.

    Parameters
    ----------
    a, b
        One model's rows of a validated predictions table each
        (:func:`~wsi_pipeline.scoring.predictions.validate_predictions`), all their repeats.
    task_a, task_b
        The task each table was scored for (their target columns and, for a binary task, the
        threshold of threshold metrics).
    metric
        A metric of the task (for a binary task, any of
        :data:`~wsi_pipeline.scoring.binary.BINARY_METRICS`).
    n_resamples, level, seed
        The paired bootstrap and the level of the difference's interval.

    Returns
    -------
    PairedResult
        The test, or the reason it was refused: different units (slides against patients),
        no shared patient, a shared patient whose truth differs, or a metric without a
        resampling rule.
    """
    units = unit_columns(a)
    if units != unit_columns(b):
        shared = len(set(a["patient_id"]) & set(b["patient_id"]))
        return PairedResult(shared, refused="one table scores slides, the other patients: their rows cannot be paired")
    common = _shared_units([a, b], units)
    n_patients = len({key[0] for key in common})
    if not common:
        return PairedResult(0, refused="no patient scored by both")
    ra, rb = _aligned(a, units, common), _aligned(b, units, common)
    differing = _truth_differs(ra[0], rb[0], task_a.target_columns, task_b.target_columns)
    if differing:
        shown = ", ".join(differing[:_EXAMPLES]) + (f" and {len(differing) - _EXAMPLES} more" if len(differing) > _EXAMPLES else "")
        return PairedResult(n_patients, refused=f"the truth differs for {len(differing)} of the {n_patients} shared patients "
                                                f"({shown}): not the same cohort, so not paired")
    side_a, side_b = _side(task_a, metric, ra), _side(task_b, metric, rb)
    if side_a is None or side_b is None:
        return PairedResult(n_patients, refused=f"no paired test of {metric} for a {task_a.name} task")
    groups = np.array([key[0] for key in common]) if SLIDE_COLUMN in units else None

    def difference(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"difference": side_a(weights) - side_b(weights)}

    draws = bootstrap_weighted(difference, len(common), groups=groups, n_resamples=n_resamples, seed=seed)
    bootstrap_p = bootstrap_p_value(draws.values["difference"])
    interval = draws.interval("difference", level).as_dict()
    labels = ra[0][task_a.target_columns[0]].to_numpy(dtype=np.float64) if task_a.name == "binary" else None
    if (metric == "auc" and labels is not None and len(ra) == len(rb) == 1 and groups is None
            and min(labels.sum(), labels.size - labels.sum()) >= 2):
        result = delong_test(labels, ra[0]["score"].to_numpy(float), rb[0]["score"].to_numpy(float), level=level)
        delong = {"value": _number(result.difference), "ci_low": _number(result.ci_low), "ci_high": _number(result.ci_high)}
        return PairedResult(n_patients, DELONG, _number(result.p_value), delong, bootstrap_p, _number(result.p_value))
    return PairedResult(n_patients, BOOTSTRAP, bootstrap_p, interval, bootstrap_p)


def _shared_units(tables: Sequence[pd.DataFrame], units: list[str]) -> list[tuple[str, ...]]:
    """Units present in every repeat of every table, sorted."""
    shared: set[tuple[str, ...]] | None = None
    for table in tables:
        for _, rows in table.groupby(REPEAT_COLUMN, sort=True):
            keys = set(rows[units].itertuples(index=False, name=None))
            shared = keys if shared is None else shared & keys
    return sorted(shared or ())


def _aligned(table: pd.DataFrame, units: list[str], common: list[tuple[str, ...]]) -> list[pd.DataFrame]:
    """Each repeat's rows of the shared units, in the order of ``common``."""
    index = pd.MultiIndex.from_tuples(common, names=units) if len(units) > 1 else pd.Index([key[0] for key in common], name=units[0])
    return [rows.set_index(units).loc[index].reset_index() for _, rows in table.groupby(REPEAT_COLUMN, sort=True)]


def _truth_differs(a: pd.DataFrame, b: pd.DataFrame, columns_a: Sequence[str], columns_b: Sequence[str]) -> list[str]:
    """Patients (with the unit order of ``a``) whose target values differ between the aligned tables."""
    differs = np.zeros(len(a), dtype=bool)
    for column_a, column_b in zip(columns_a, columns_b, strict=False):
        va, vb = a[column_a], b[column_b]
        numeric_a, numeric_b = pd.to_numeric(va, errors="coerce"), pd.to_numeric(vb, errors="coerce")
        if numeric_a.notna().eq(va.notna()).all() and numeric_b.notna().eq(vb.notna()).all():
            # Numbers (times, labels read as floats): equal within rounding, missing on both sides counts as equal.
            differs |= ~np.isclose(numeric_a.to_numpy(float), numeric_b.to_numpy(float), equal_nan=True)
        else:
            differs |= va.astype(str).to_numpy() != vb.astype(str).to_numpy()
    return list(dict.fromkeys(a["patient_id"].astype(str).to_numpy()[differs]))


def _side(task: Task, metric: str, repeats: list[pd.DataFrame]) -> Callable[[np.ndarray], np.ndarray] | None:
    """``weights (B, rows) -> (B,)``: the metric on each resample, averaged over the repeats; None without a rule."""
    if task.name == "binary" and metric in BINARY_METRICS:
        y = repeats[0][task.target_columns[0]].to_numpy(dtype=np.float64)
        scores = [rows["score"].to_numpy(dtype=np.float64) for rows in repeats]
        threshold = task.config.threshold
        if metric == "auc":  # the one a leaderboard ranks by: skip the other ten metrics
            return lambda w: np.mean([auc_weighted(y, s, w) for s in scores], axis=0)
        return lambda w: np.mean([binary_metric_arrays(y, s, threshold, w)[metric] for s in scores], axis=0)
    if metric not in task.metric_names:
        return None
    columns = [*task.target_columns, *task.prediction_columns]
    tables = [{c: rows[c].to_numpy() for c in columns} for rows in repeats]

    def on_rows(rows: np.ndarray) -> float:
        return float(np.mean([task.metrics({c: v[rows] for c, v in table.items()})[metric] for table in tables]))

    # Any task's metric: a resample's weights as row indices (each row repeated as often as drawn).
    index = np.arange(len(repeats[0]))
    return lambda w: np.array([on_rows(np.repeat(index, row.astype(int))) for row in np.atleast_2d(w)])


def _number(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
