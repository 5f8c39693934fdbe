"""The scoring stage: predictions table in; metrics.json, plots, report.md and report.html out.

Runs once per run, on CPU, after all folds are trained. It is a pure function of
(predictions, settings): the bootstrap is seeded, so re-running gives identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.banners import banner_lines, names_demo_encoder
from wsi_pipeline.scoring.binary_intervals import binary_extras
from wsi_pipeline.scoring.bootstrap import bootstrap_task_metrics
from wsi_pipeline.scoring.layout import (
    METRICS_FILE,
    PLOTS_DIR,
    PR_PLOT,
    RELIABILITY_PLOT,
    km_plot_name,
    safe_name,
)
from wsi_pipeline.scoring.markdown_html import write_html_report
from wsi_pipeline.scoring.per_fold import PER_FOLD_KEY, per_fold_entries
from wsi_pipeline.scoring.predictions import (
    REPEAT_COLUMN,
    SLIDE_COLUMN,
    by_task,
    follow_up_columns,
    load_predictions,
    unit_columns,
    validate_predictions,
)
from wsi_pipeline.scoring.report import write_report
from wsi_pipeline.scoring.run_comparisons import (
    COMPARISONS_KEY,
    permutation_entry,
    run_comparisons,
)
from wsi_pipeline.scoring.subgroups import (
    SUBGROUPS_KEY,
    subgroup_columns,
    subgroup_entries,
)
from wsi_pipeline.scoring.survival import km_by_group
from wsi_pipeline.scoring.task_extras import risk_split, task_extras
from wsi_pipeline.scoring.task_intervals import task_intervals
from wsi_pipeline.scoring.threshold import Threshold

if TYPE_CHECKING:
    from wsi_pipeline.config.submission import SubmissionConfig
    from wsi_pipeline.mil.tasks.base import Task
    from wsi_pipeline.scoring.cohort_summary import CohortSummary
    from wsi_pipeline.scoring.survival_metrics import RiskCutoff

__all__ = ["load_predictions", "score_predictions"]

log = logging.getLogger(__name__)


def score_predictions(
    predictions: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    task: Task | None = None,
    title: str = "wsi-pipeline report",
    context: Mapping[str, Any] | None = None,
    source: str = "predictions table",
    caption: str | None = None,
    ci_level: float = 0.95,
    submission: SubmissionConfig | None = None,
    risk_cutoffs: Mapping[str, RiskCutoff] | None = None,
    subgroups: Sequence[str] = (),
    time_auc_horizons: Sequence[float] = (),
    thresholds: Mapping[str, Threshold] | None = None,
    compare: bool = False,
    per_fold: bool = False,
    cohort: CohortSummary | None = None,
    protocol: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Score every model in a predictions table for its task and write metrics, plots and a report.

    Parameters
    ----------
    predictions
        One row per (patient_id, model, repeat): ``patient_id, model, fold`` (``repeat``
        optional), the task's target and prediction columns (binary: ``label, score``), and
        optionally the follow-up columns ``pfs_months, event``. With a ``slide_id`` column,
        one row per (patient_id, slide_id, model, repeat): metrics are the slides', and the
        bootstrap resamples patients, each with all their slides.
    out_dir
        Output folder (created). Receives ``metrics.json``, the task's plots in ``plots/``
        (binary: ``roc.png``; multiclass: one-vs-rest ``roc.png``; regression:
        ``scatter.png``), ``plots/km_<model>.png`` (Kaplan-Meier curves of the task's
        predicted groups, when follow-up columns exist), ``report.md`` and ``report.html``
        (the same report, plots embedded).
    n_resamples
        Bootstrap resamples per metric and model.
    seed
        Bootstrap seed (the same for every model: with identical patient sets, models are
        then compared on the same resamples).
    threshold
        The decision threshold of the default binary task (ignored when ``task`` is given:
        a binary task carries its own).
    task
        The task the predictions are for; default: binary with ``threshold``. A multiclass
        task without classes is bound to the table's labels.
    title
        Report title.
    context
        Facts about the run printed in the report (dataset, encoder, run id, ...).
    source
        Name of the table's origin (e.g. its file path) for error messages.
    caption
        A line printed under every plot (e.g. the encoder, flagged when it is a demo).
    ci_level
        Confidence level of every interval (the workflow's ``scoring.ci_level``), named in
        the report and the plots.
    submission
        The workflow's ``scoring.submission``: when given, its file is written into
        ``out_dir`` (:func:`~wsi_pipeline.scoring.submission.write_submission`) and the
        report's run facts name it.
    risk_cutoffs
        A survival task's cut-off between predicted risk groups per model, fixed on validation
        rows (standalone scoring); a model without one is split at the median risk of its
        scored rows.
    subgroups
        Columns of the table to break the headline metrics down by (besides ``site``, which
        is used whenever present); see :mod:`~wsi_pipeline.scoring.subgroups`.
    time_auc_horizons
        Times (in the follow-up's unit) of a survival task's time-dependent AUC
        (``td_auc_<t>``; :mod:`~wsi_pipeline.scoring.time_auc`); none by default.
    thresholds
        A binary task's decision threshold per model, chosen on validation predictions
        (:mod:`~wsi_pipeline.scoring.run_threshold`); a model not in it is scored at the task's
        threshold. Recorded under the model's ``threshold`` key and in the report's notes.
    compare
        Test the models against each other (:mod:`~wsi_pipeline.scoring.run_comparisons`: each
        against the mean-pool baseline, else every pair): metrics.json and the returned dict
        gain ``comparisons``, a binary model's entry its AUC's label-permutation p
        (``auc_permutation_p``, ``n_resamples`` permutations), the report a Comparisons table.
    per_fold
        Add each model's ``per_fold`` metrics, each with its patient-bootstrap interval
        (:mod:`~wsi_pipeline.scoring.per_fold`), and the report's Per fold table.
    cohort
        The run's cohort facts (:mod:`~wsi_pipeline.scoring.cohort_summary`): the report's
        Cohort section, and its synthetic-cohort banner.
    protocol
        The report's Protocol section (:func:`~wsi_pipeline.scoring.protocol.protocol_facts`).

    Returns
    -------
    dict
        Model name -> ``{<metric>: {"value", "ci_low", "ci_high"}, ..., "n_patients": int,
        <the task's counts>}`` (binary: every metric of
        :data:`~wsi_pipeline.scoring.binary.BINARY_METRICS` -- the task's ``auc``, ``accuracy``,
        ``balanced_accuracy`` first, at the task's threshold -- and ``n_positive``), plus
        ``"logrank_p"`` (``{"value", "ci_low": None, "ci_high": None}``: a p-value has no
        interval) when follow-up columns exist and the task has predicted groups. Slide-level
        rows add ``"n_slides"`` (the counts are of slides). With several repeats, ``value`` is the mean over repeats, the
        interval the patient bootstrap of that mean (see
        :func:`~wsi_pipeline.scoring.bootstrap.bootstrap_task_metrics`), and each metric also
        has ``per_repeat``: its value on each repeat; ``n_repeats`` is given and
        ``logrank_p``'s value is the median over repeats. Undefined numbers are ``None``. Identical
        to the content of ``metrics.json``. Multiclass adds per-class ``precision_<c>``,
        ``recall_<c>``, ``f1_<c>``, ``auc_<c>`` and ``confusion``; survival ``hazard_ratio``
        and ``risk_groups`` (:mod:`~wsi_pipeline.scoring.task_extras`); with a ``site`` or
        subgroup column, ``subgroups`` (:mod:`~wsi_pipeline.scoring.subgroups`).

    Raises
    ------
    WSIPipelineError
        If the table is invalid (missing column, duplicate patient/model pair, ...).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if task is None:
        from wsi_pipeline.mil.tasks.binary import BinaryTask
        from wsi_pipeline.mil.tasks.settings import BinaryConfig

        task = BinaryTask(BinaryConfig(threshold=threshold)) if 0.0 < threshold < 1.0 else BinaryTask()
    if isinstance(predictions, pd.DataFrame) and all(c in predictions.columns for c in task.target_columns):
        task = by_task(source, lambda: task.bind(predictions))  # a multiclass task without classes takes the table's
    df = validate_predictions(predictions, source=source, task=task)
    out = Path(out_dir)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    _check_plot_names(df["model"].unique(), source)
    follow_up = follow_up_columns(df, task)
    notes: list[str] = []
    breakdown = subgroup_columns(df, subgroups, where=source, option="scoring.subgroups")
    cutoffs = dict(risk_cutoffs or {})

    metrics: dict[str, dict[str, Any]] = {}
    for model, rows in df.groupby("model", sort=True):
        chosen = (thresholds or {}).get(model)
        model_task = task if chosen is None else task.at_threshold(chosen.value)
        metrics[model], model_notes = _score_model(model, rows, model_task, n_resamples, seed, follow_up, source, ci_level,
                                                   cutoffs.get(model), breakdown, time_auc_horizons)
        if chosen is not None:
            metrics[model]["threshold"] = chosen.as_dict()
            model_notes = [*model_notes, f"{model}: decision threshold {chosen.describe()}"]
        if per_fold:
            metrics[model][PER_FOLD_KEY] = per_fold_entries(rows, model_task, n_resamples=n_resamples, level=ci_level, seed=seed)
        if compare and task.name == "binary":
            metrics[model].update(permutation_entry(rows, task, n_permutations=n_resamples, seed=seed))
        notes += model_notes
    notes += _cohort_notes(df)
    comparisons: list[dict[str, Any]] | None = None
    if compare:
        comparisons, comparison_notes = run_comparisons(df, task, n_resamples=n_resamples, level=ci_level, seed=seed)
        notes += comparison_notes

    # Imported here: matplotlib is only needed once the numbers are done, and importing the
    # stage module (e.g. by the engine to build its task graph) stays light.
    from wsi_pipeline.scoring.confusion_plot import plot_confusions
    from wsi_pipeline.scoring.plots import plot_km, plot_task

    first = df[df[REPEAT_COLUMN] == df[REPEAT_COLUMN].min()]
    plot_task(task, first, plots_dir, metrics=metrics, caption=caption, ci_level=ci_level)
    for binary_only in (PR_PLOT, RELIABILITY_PLOT):
        if task.name != "binary" and (plots_dir / binary_only).exists():
            (plots_dir / binary_only).unlink()  # an earlier binary run's figure must not sit next to these results
    plot_confusions(metrics, plots_dir, caption=caption)
    for model in metrics:
        km_path = plots_dir / km_plot_name(model)
        followed = follow_up is not None and first.loc[first["model"] == model, list(follow_up)].notna().all(axis=1).any()
        if followed and task.risk_groups(first) is not None:
            plot_km(first, km_path, model, task=task, caption=caption, risk_cutoff=cutoffs.get(model))
        elif km_path.exists():
            # A plot from an earlier run on other inputs must not sit next to these results.
            km_path.unlink()

    if submission is not None:
        from wsi_pipeline.scoring.submission import write_submission

        written = write_submission(df, submission, out, task.prediction_columns)
        context = {**(context or {}), "submission": written.describe()}
    settings = {"n_resamples": n_resamples, "seed": seed, "threshold": getattr(task.config, "threshold", None),
                "n_repeats": int(df[REPEAT_COLUMN].nunique()), "ci_level": ci_level}
    banners = banner_lines(synthetic=cohort is not None and cohort.synthetic, demo=names_demo_encoder(context))
    report = write_report(metrics, df, out, title=title, context=context, settings=settings, notes=notes, task=task,
                          banners=banners, cohort=cohort, protocol=protocol, comparisons=comparisons)
    write_html_report(report)  # the same report, self-contained: plots embedded, opens offline
    result: dict[str, Any] = {**metrics, COMPARISONS_KEY: comparisons} if comparisons is not None else metrics
    # metrics.json last: its presence means the whole stage completed.
    atomic_write_text(out / METRICS_FILE, json.dumps(result, indent=2, allow_nan=False) + "\n")
    log.info("scored %d model(s) into %s", len(metrics), out)
    return result


def _score_model(
    model: str, rows: pd.DataFrame, task: Task, n_resamples: int, seed: int, follow_up: tuple[str, str] | None, source: str,
    ci_level: float = 0.95, cutoff: RiskCutoff | None = None, breakdown: Sequence[str] = (), horizons: Sequence[float] = (),
) -> tuple[dict[str, Any], list[str]]:
    # Rows arrive sorted by patient_id (then slide_id) within each repeat, so models with the
    # same patients get the same resamples.
    repeats = [group.reset_index(drop=True) for _, group in rows.groupby(REPEAT_COLUMN, sort=True)]
    units = unit_columns(rows)
    rows_of_first = repeats[0][units].values.tolist()
    patients = repeats[0]["patient_id"].unique().tolist()
    if any(group[units].values.tolist() != rows_of_first for group in repeats[1:]):
        raise WSIPipelineError(
            f"model '{model}' has predictions for different {'slides' if len(units) > 1 else 'patients'} in different repeats",
            where=source,
            fix="give every repeat a prediction for every patient (each repeat is a whole cross-validation)",
        )
    columns = [*task.target_columns, *task.prediction_columns]
    tables = [{c: group[c].to_numpy() for c in columns} for group in repeats]
    # Slide rows: draw patients, so a patient's correlated slides never count as independent.
    clusters = repeats[0]["patient_id"].to_numpy() if SLIDE_COLUMN in units else None
    if task.name in ("multiclass", "regression"):  # the same intervals as weighted sums: ~100x faster than per-resample calls
        intervals = task_intervals(task, repeats, task.metric_names, groups=clusters, n_resamples=n_resamples, level=ci_level,
                                   seed=seed)
    else:
        intervals = bootstrap_task_metrics(
            tables, task.metrics, task.metric_names, n_resamples=n_resamples, level=ci_level, seed=seed, groups=clusters
        )
    entry: dict[str, Any] = {}
    notes: list[str] = []
    for name, (interval, per_repeat) in intervals.items():
        entry[name] = interval.as_dict()
        if len(repeats) > 1:
            entry[name]["per_repeat"] = [_json_number(v) for v in per_repeat]
        if interval.n_undefined:
            notes.append(
                f"{model}: {name}: {interval.n_undefined} bootstrap resample(s) were undefined (e.g. a single class) and "
                f"were redrawn ({interval.n_resamples_used} used)."
            )
    if task.name == "binary":
        # metrics.json's full binary set: the task's own metrics above, the others bootstrapped here on the same draws.
        entry.update(binary_extras(repeats, task.config.label_column, task.config.threshold, task.metric_names,
                                   groups=clusters, n_resamples=n_resamples, level=ci_level, seed=seed))
    entry.update(task_extras(task, repeats, groups=clusters, n_resamples=n_resamples, level=ci_level, seed=seed, cutoff=cutoff,
                             time_auc_horizons=horizons))
    entry["n_patients"] = len(patients)
    if SLIDE_COLUMN in units:
        entry["n_slides"] = len(rows_of_first)
    entry.update(task.counts(repeats[0]))
    if len(repeats) > 1:
        entry["n_repeats"] = len(repeats)
    scored = f"{len(rows_of_first)} slides of {len(patients)} patients" if SLIDE_COLUMN in units else f"{len(patients)} patients"
    undefined = [name for name in task.metric_names if entry[name]["value"] is None]
    if undefined:
        notes.append(f"{model}: {', '.join(undefined)} undefined on these {scored} (e.g. a single class).")

    if follow_up is not None and task.risk_groups(repeats[0]) is not None:
        p_values, n_followed = [], 0
        for group in repeats:
            followed = group.dropna(subset=list(follow_up))
            n_followed = len(followed)
            p = math.nan
            if len(followed):
                groups, _ = risk_split(task, followed, cutoff)
                p = km_by_group(followed[follow_up[0]], followed[follow_up[1]], groups).logrank_p
            p_values.append(p)
        finite = [p for p in p_values if math.isfinite(p)]
        # The metrics' shape, with no interval: a p-value is not an estimate to bootstrap.
        median = float(np.median(finite)) if finite and len(finite) == len(p_values) else None
        entry["logrank_p"] = {"value": median, "ci_low": None, "ci_high": None}
        if len(repeats) > 1:
            entry["logrank_p"]["per_repeat"] = [_json_number(p) for p in p_values]
        unit = "slide" if SLIDE_COLUMN in units else "patient"
        if n_followed < len(rows_of_first):
            notes.append(f"{model}: {len(rows_of_first) - n_followed} {unit}(s) without follow-up left out of the log-rank test.")
        if SLIDE_COLUMN in units:
            notes.append(f"{model}: the log-rank test compares slides, taking a patient's slides as independent: "
                         "its p is optimistic when patients have several slides.")
        if median is None:
            notes.append(f"{model}: log-rank p undefined (a predicted group is empty or no event was observed).")
    if breakdown:
        entry[SUBGROUPS_KEY] = subgroup_entries(repeats, task, breakdown, slide_level=SLIDE_COLUMN in units,
                                                n_resamples=n_resamples, level=ci_level, seed=seed)
    return entry, notes


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _cohort_notes(df: pd.DataFrame) -> list[str]:
    # Models scored on different patients are not comparable; say so rather than refuse,
    # because a smaller baseline run is sometimes intended.
    patient_sets = {model: frozenset(rows["patient_id"]) for model, rows in df.groupby("model")}
    if len(set(patient_sets.values())) > 1:
        sizes = ", ".join(f"{m}: {len(p)}" for m, p in sorted(patient_sets.items()))
        return [f"Models were scored on different sets of patients ({sizes}); compare them with care."]
    return []


def _check_plot_names(models: Any, source: str) -> None:
    seen: dict[str, str] = {}
    for model in models:
        key = safe_name(model)
        if key in seen and seen[key] != model:
            raise WSIPipelineError(
                f"models '{seen[key]}' and '{model}' would share the plot file {km_plot_name(model)}",
                where=source,
                fix="rename one of the models so that their names differ in letters, digits, '.', '_' or '-'",
            )
        seen[key] = model
