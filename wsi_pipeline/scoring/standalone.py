"""Standalone scoring: any predictions file against a truth file, the same code as the run's score stage.

``wsi-pipeline score --predictions P.csv --truth T.csv --task binary --output DIR`` lands here.
The inputs are read and checked by :mod:`wsi_pipeline.scoring.inputs`. Then:

- **binary**: every metric of :data:`~wsi_pipeline.scoring.binary.BINARY_METRICS` with a
  patient bootstrap interval at ``ci_level``, the decision threshold fixed in advance or chosen
  on the file's validation rows (never on the scored rows), the label-permutation p-value of
  the AUC, and paired comparisons (DeLong, paired bootstrap of the AUC difference) of each
  model with the mean-pool baseline, or of every pair; ``roc.png``, ``reliability.png``,
  ``report.md``, the self-contained ``report.html`` and ``metrics.json`` (written last).
- **multiclass, survival, regression**: the run's score stage
  (:func:`~wsi_pipeline.scoring.stage.score_predictions`) on the joined table: the task's
  metrics with bootstrap intervals, its plots and report. A survival task's risk groups
  (Kaplan-Meier curves, log-rank test, Cox hazard ratio) are split at the validation rows'
  median risk when the file has validation rows, else at the scored rows' median.

With a ``site`` column in either file, or ``--subgroup-column`` columns, every model's entry
also gets ``subgroups``: its headline metrics within each value (:mod:`~wsi_pipeline.scoring.subgroups`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.binary_intervals import binary_intervals
from wsi_pipeline.scoring.calibration import DEFAULT_BINS
from wsi_pipeline.scoring.comparison import compare_models, comparison_pairs
from wsi_pipeline.scoring.inputs import Columns, ScoringInputs, load_inputs
from wsi_pipeline.scoring.layout import (
    METRICS_FILE,
    PLOTS_DIR,
    RELIABILITY_PLOT,
    ROC_PLOT,
)
from wsi_pipeline.scoring.per_fold import PER_FOLD_KEY, per_fold_entries
from wsi_pipeline.scoring.permutation import auc_permutation_p
from wsi_pipeline.scoring.predictions import REPEAT_COLUMN, SLIDE_COLUMN
from wsi_pipeline.scoring.stage import score_predictions
from wsi_pipeline.scoring.standalone_report import write_binary_report
from wsi_pipeline.scoring.subgroups import (
    SUBGROUPS_KEY,
    subgroup_columns,
    subgroup_entries,
)
from wsi_pipeline.scoring.survival_metrics import risk_cutoff
from wsi_pipeline.scoring.threshold import (
    THRESHOLD_METHODS,
    Threshold,
    choose_threshold,
)

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.binary import BinaryTask

log = logging.getLogger(__name__)

#: metrics.json's key of the model comparisons (not a model).
COMPARISONS_KEY = "comparisons"


@dataclass(frozen=True)
class ScoringSettings:
    """How standalone scoring computes its numbers.

    Attributes
    ----------
    n_resamples
        Bootstrap resamples per metric (>= 1,000 for reported intervals).
    ci_level
        Confidence level of every interval, e.g. 0.95.
    seed
        Seed of the bootstrap and of the permutations.
    threshold_method
        ``fixed`` (``threshold``), ``youden`` or ``sensitivity`` (chosen on validation rows).
    threshold
        The fixed threshold.
    target_sensitivity
        The ``sensitivity`` rule's target.
    n_permutations
        Label permutations of the AUC's p-value.
    n_bins
        Equal-width bins of the expected calibration error and the reliability diagram.
    time_auc_horizons
        Times of a survival task's time-dependent AUC (none by default).
    """

    n_resamples: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    threshold_method: str = "fixed"
    threshold: float = 0.5
    target_sensitivity: float | None = None
    n_permutations: int = 1000
    n_bins: int = DEFAULT_BINS
    time_auc_horizons: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.5 < self.ci_level < 1.0:
            raise WSIPipelineError(f"confidence level {self.ci_level!r} is not in (0.5, 1)", where="--ci-level", fix="use e.g. 0.95")
        if self.n_resamples < 100:
            raise WSIPipelineError(f"{self.n_resamples} bootstrap resamples are too few for an interval", where="--n-resamples",
                                   fix="use 1000 or more")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise WSIPipelineError(f"unknown threshold method '{self.threshold_method}'", where="--threshold-method",
                                   fix=f"use one of {', '.join(THRESHOLD_METHODS)}")
        if any(not h > 0 for h in self.time_auc_horizons):
            raise WSIPipelineError(f"time-dependent AUC horizons {list(self.time_auc_horizons)} must all be > 0", where="--time-auc",
                                   fix="give times after the start of follow-up, in its unit (e.g. --time-auc 12)")
        if not 0.0 < self.threshold < 1.0:
            raise WSIPipelineError(f"threshold {self.threshold!r} is not in (0, 1)", where="--threshold", fix="use e.g. 0.5")
        if self.threshold_method == "sensitivity" and not (self.target_sensitivity and 0 < self.target_sensitivity <= 1):
            raise WSIPipelineError("the sensitivity threshold needs a target sensitivity in (0, 1]", where="--target-sensitivity",
                                   fix="pass e.g. --target-sensitivity 0.9")


def score_files(
    predictions: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    task: str,
    out_dir: str | os.PathLike[str],
    *,
    columns: Columns | None = None,
    settings: ScoringSettings | None = None,
) -> dict[str, Any]:
    """Score a predictions file against a truth file and write metrics.json, plots and a report.

    Parameters
    ----------
    predictions
        CSV: the id column, the score column(s), optionally ``model``, a group column and a
        split column (``validation``/``test``).
    truth
        CSV: the id column and the task's target column(s).
    task
        ``binary``, ``multiclass``, ``survival`` or ``regression``.
    out_dir
        Output folder (created).
    columns
        Column names (see :class:`~wsi_pipeline.scoring.inputs.Columns`); default the defaults.
    settings
        Bootstrap, threshold and permutation settings; default the defaults.

    Returns
    -------
    dict
        The content of metrics.json: a key per model, each metric ``{"value", "ci_low",
        "ci_high"}``; for a binary task also ``"comparisons"``.

    Raises
    ------
    WSIPipelineError
        For any problem with the inputs (see :mod:`wsi_pipeline.scoring.inputs`).
    """
    columns = columns or Columns()
    settings = settings or ScoringSettings()
    if settings.time_auc_horizons and task != "survival":
        raise WSIPipelineError(f"a time-dependent AUC needs follow-up times; a {task} task has none", where="--time-auc",
                               fix="drop --time-auc, or score a survival task")
    inputs = load_inputs(predictions, truth, task, columns)
    out = Path(out_dir)
    if task != "binary":
        return _score_with_stage(inputs, out, settings)
    return _score_binary(inputs, out, columns, settings)


def _score_with_stage(inputs: ScoringInputs, out: Path, settings: ScoringSettings) -> dict[str, Any]:
    if not inputs.validation.empty and inputs.task.name != "survival":
        raise WSIPipelineError(
            "validation rows fix a binary decision threshold or a survival risk cut-off; "
            f"a {inputs.task.name} task has neither",
            where=str(inputs.predictions_path), fix="drop the validation rows (or the split column)",
        )
    cutoffs = None
    if inputs.task.name == "survival":
        # Risk groups split at the validation rows' median risk, never at a value tuned on the scored rows.
        cutoffs = {model: risk_cutoff(rows["risk"], inputs.validation.loc[inputs.validation["model"] == model, "risk"])
                   for model, rows in inputs.table.groupby("model")}
    return score_predictions(
        inputs.table, out, n_resamples=settings.n_resamples, seed=settings.seed, task=inputs.task,
        title=f"Scoring of {inputs.predictions_path.name}", source=str(inputs.predictions_path),
        context=_context(inputs), ci_level=settings.ci_level, risk_cutoffs=cutoffs, subgroups=inputs.subgroups,
        time_auc_horizons=settings.time_auc_horizons, per_fold=inputs.table["fold"].nunique() > 1,
    )


def _context(inputs: ScoringInputs) -> dict[str, str]:
    return {"predictions": str(inputs.predictions_path), "truth": str(inputs.truth_path)}


def _score_binary(inputs: ScoringInputs, out: Path, columns: Columns, settings: ScoringSettings) -> dict[str, Any]:
    label = inputs.task.target_columns[0]
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    thresholds: dict[str, Threshold] = {}
    breakdown = subgroup_columns(inputs.table, inputs.subgroups, where=str(inputs.predictions_path), option="--subgroup-column")
    for model in inputs.models:
        rows = inputs.table[inputs.table["model"] == model]
        thresholds[model] = _threshold(inputs, model, label, settings)
        metrics[model], model_notes = _score_binary_model(rows, inputs.task, thresholds[model], inputs.grouped, settings)
        notes += [f"{model}: {note}" for note in model_notes]
        if breakdown:
            metrics[model][SUBGROUPS_KEY] = subgroup_entries(
                [rows.reset_index(drop=True)], inputs.task, breakdown, slide_level=inputs.grouped,
                n_resamples=settings.n_resamples, level=settings.ci_level, seed=settings.seed)
    comparisons = _comparisons(inputs, label, settings, notes)

    from wsi_pipeline.scoring.reliability_plot import plot_reliability

    plots = out / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    _plot_roc(inputs.table, label, plots / ROC_PLOT, metrics, settings)
    plot_reliability(inputs.table, plots / RELIABILITY_PLOT, label_column=label, metrics=metrics, n_bins=settings.n_bins,
                     ci_level=settings.ci_level)
    write_binary_report(out, inputs=inputs, metrics=metrics, comparisons=comparisons, thresholds=thresholds,
                        settings=settings, notes=notes)
    result = {**metrics, COMPARISONS_KEY: comparisons}
    # metrics.json last: its presence means every output is complete.
    atomic_write_text(out / METRICS_FILE, json.dumps(result, indent=2, allow_nan=False) + "\n")
    log.info("scored %d model(s) into %s", len(metrics), out)
    return result


def _threshold(inputs: ScoringInputs, model: str, label: str, settings: ScoringSettings) -> Threshold:
    if settings.threshold_method == "fixed":
        return choose_threshold("fixed", fixed=settings.threshold)
    validation = inputs.validation[inputs.validation["model"] == model]
    y = validation[label].to_numpy()
    if validation.empty or len(np.unique(y)) < 2:
        what = "no validation rows" if validation.empty else "validation rows of one class only"
        raise WSIPipelineError(
            f"the {settings.threshold_method} threshold of model '{model}' must be chosen on validation predictions, "
            f"and there are {what}; it is never tuned on the scored (test) rows",
            where=str(inputs.predictions_path),
            fix="add validation rows of both classes, marked 'validation' in the split column, or use --threshold-method fixed",
        )
    return choose_threshold(settings.threshold_method, validation_labels=y, validation_scores=validation["score"].to_numpy(),
                            target_sensitivity=settings.target_sensitivity)


def _score_binary_model(
    rows: pd.DataFrame, task: BinaryTask, threshold: Threshold, grouped: bool, settings: ScoringSettings
) -> tuple[dict[str, Any], list[str]]:
    label = task.target_columns[0]
    y = rows[label].to_numpy(dtype=np.float64)
    s = rows["score"].to_numpy(dtype=np.float64)
    groups = rows["patient_id"].to_numpy() if grouped else None
    intervals = binary_intervals(y, [s], threshold.value, groups=groups, n_resamples=settings.n_resamples,
                                 level=settings.ci_level, seed=settings.seed, n_bins=settings.n_bins)
    entry: dict[str, Any] = {}
    notes = []
    for name, (interval, _) in intervals.items():
        entry[name] = interval.as_dict()
        if interval.n_undefined:
            notes.append(f"{name}: {interval.n_undefined} bootstrap resample(s) were undefined and redrawn "
                         f"({interval.n_resamples_used} used).")
        if entry[name]["value"] is None:
            notes.append(f"{name} is undefined on these rows (e.g. nothing predicted positive at the threshold).")
    entry["n_patients"] = int(rows["patient_id"].nunique())
    if grouped:
        entry["n_slides"] = len(rows)
    entry["n_positive"] = int(y.sum())
    entry["threshold"] = threshold.as_dict()
    entry["auc_permutation_p"] = auc_permutation_p(y, s, groups=groups, n_permutations=settings.n_permutations, seed=settings.seed)
    entry["n_permutations"] = settings.n_permutations
    if rows["fold"].nunique() > 1:
        # The run stage's per-fold entries (one repeat here), at this model's threshold.
        entry[PER_FOLD_KEY] = per_fold_entries(rows.assign(**{REPEAT_COLUMN: 0}), task.at_threshold(threshold.value),
                                               n_resamples=settings.n_resamples, level=settings.ci_level, seed=settings.seed,
                                               n_bins=settings.n_bins)
    return entry, notes


def _comparisons(inputs: ScoringInputs, label: str, settings: ScoringSettings, notes: list[str]) -> list[dict[str, Any]]:
    keys = ["patient_id", *([SLIDE_COLUMN] if inputs.grouped else [])]
    by_model = {model: rows.set_index(keys) for model, rows in inputs.table.groupby("model", sort=True)}
    comparisons = []
    for a, b in comparison_pairs(inputs.models):
        # The same rows for both (load_inputs checks that every model predicts every id of the truth).
        common = by_model[a].index.intersection(by_model[b].index)
        left, right = by_model[a].loc[common], by_model[b].loc[common]
        groups = common.get_level_values("patient_id").to_numpy() if inputs.grouped else None
        result = compare_models(left[label].to_numpy(), left["score"].to_numpy(), right["score"].to_numpy(), groups=groups,
                                n_resamples=settings.n_resamples, level=settings.ci_level, seed=settings.seed)
        if result["delong"] is None:
            notes.append(f"{a} vs {b}: DeLong's test not computed ("
                         + ("several rows per patient; the paired bootstrap draws patients)" if inputs.grouped
                            else "fewer than two patients of a class)"))
        comparisons.append({"model": a, "reference": b, **result})
    return comparisons


def _plot_roc(table: pd.DataFrame, label: str, path: Path, metrics: dict[str, Any], settings: ScoringSettings) -> None:
    from wsi_pipeline.scoring.plots import plot_roc

    # The ROC plot reads the pipeline's binary layout: one row per id, the label in 'label'.
    frame = table.rename(columns={label: "label"})[["model", "fold", "label", "score"]].copy()
    frame["patient_id"] = table["patient_id"] + ("/" + table[SLIDE_COLUMN] if SLIDE_COLUMN in table else "")
    plot_roc(frame, path, metrics=metrics, ci_level=settings.ci_level)
