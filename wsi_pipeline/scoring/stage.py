"""The scoring stage: predictions table in; metrics.json, plots and report.md out.

Runs once per run, on CPU, after all folds are trained. It is a pure function of
(predictions, settings): the bootstrap is seeded, so re-running gives identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.bootstrap import bootstrap_ci
from wsi_pipeline.scoring.layout import (
    METRICS_FILE,
    PLOTS_DIR,
    ROC_PLOT,
    km_plot_name,
    safe_name,
)
from wsi_pipeline.scoring.metrics import METRIC_NAMES, metric_function
from wsi_pipeline.scoring.predictions import (
    SURVIVAL_COLUMNS,
    has_survival,
    load_predictions,
    validate_predictions,
)
from wsi_pipeline.scoring.report import write_report
from wsi_pipeline.scoring.survival import km_by_group, predicted_groups

__all__ = ["score_predictions", "load_predictions"]

log = logging.getLogger(__name__)


def score_predictions(
    predictions: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    title: str = "wsi-pipeline report",
    context: Mapping[str, Any] | None = None,
    source: str = "predictions table",
    caption: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Score every model in a predictions table and write metrics, plots and a report.

    Parameters
    ----------
    predictions
        One row per (patient_id, model): ``patient_id, model, fold, label, score`` and
        optionally ``pfs_months, event``.
    out_dir
        Output folder (created). Receives ``metrics.json``, ``plots/roc.png``,
        ``plots/km_<model>.png`` (with survival columns) and ``report.md``.
    n_resamples
        Bootstrap resamples per metric and model.
    seed
        Bootstrap seed (the same for every model: with identical patient sets, models are
        then compared on the same resamples).
    threshold
        Scores at or above it are predicted class 1 (accuracy, balanced accuracy, survival
        groups).
    title
        Report title.
    context
        Facts about the run printed in the report (dataset, encoder, run id, ...).
    source
        Name of the table's origin (e.g. its file path) for error messages.
    caption
        A line printed under every plot (e.g. the encoder, flagged when it is a demo).

    Returns
    -------
    dict
        Model name -> ``{"auc": {"value", "ci_low", "ci_high"}, "accuracy": {...},
        "balanced_accuracy": {...}, "n_patients": int, "n_positive": int}``, plus
        ``"logrank_p"`` when survival columns exist. Undefined numbers are ``None``.
        Identical to the content of ``metrics.json``.

    Raises
    ------
    WSIPipelineError
        If the table is invalid (missing column, duplicate patient/model pair, ...).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    df = validate_predictions(predictions, source=source)
    out = Path(out_dir)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    _check_plot_names(df["model"].unique(), source)
    survival = has_survival(df)
    notes: list[str] = []

    metrics: dict[str, dict[str, Any]] = {}
    for model, rows in df.groupby("model", sort=True):
        metrics[model], model_notes = _score_model(model, rows, n_resamples, seed, threshold, survival)
        notes += model_notes
    notes += _cohort_notes(df)

    # Imported here: matplotlib is only needed once the numbers are done, and importing the
    # stage module (e.g. by the engine to build its task graph) stays light.
    from wsi_pipeline.scoring.plots import plot_km, plot_roc

    plot_roc(df, plots_dir / ROC_PLOT, metrics=metrics, caption=caption)
    for model in metrics:
        km_path = plots_dir / km_plot_name(model)
        if survival and df.loc[df["model"] == model, list(SURVIVAL_COLUMNS)].notna().all(axis=1).any():
            plot_km(df, km_path, model, threshold=threshold, caption=caption)
        elif km_path.exists():
            # A plot from an earlier run on other inputs must not sit next to these results.
            km_path.unlink()

    settings = {"n_resamples": n_resamples, "seed": seed, "threshold": threshold}
    write_report(metrics, df, out, title=title, context=context, settings=settings, notes=notes)
    # metrics.json last: its presence means the whole stage completed.
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    log.info("scored %d model(s) into %s", len(metrics), out)
    return metrics


def _score_model(
    model: str, rows: pd.DataFrame, n_resamples: int, seed: int, threshold: float, survival: bool
) -> tuple[dict[str, Any], list[str]]:
    # Rows arrive sorted by patient_id, so models with the same patients get the same resamples.
    y = rows["label"].to_numpy()
    s = rows["score"].to_numpy()
    entry: dict[str, Any] = {}
    notes: list[str] = []
    for name in METRIC_NAMES:
        interval = bootstrap_ci(y, s, metric_function(name, threshold), n_resamples=n_resamples, seed=seed)
        entry[name] = interval.as_dict()
        if interval.n_undefined:
            notes.append(
                f"{model}: {name}: {interval.n_undefined} bootstrap resample(s) had a single class and were redrawn"
                f" ({interval.n_resamples_used} used)."
            )
    entry["n_patients"] = int(len(rows))
    entry["n_positive"] = int(y.sum())
    if entry["auc"]["value"] is None:
        notes.append(f"{model}: all {len(rows)} patients have label {int(y[0])}; AUC and balanced accuracy are undefined.")

    if survival:
        followed = rows.dropna(subset=list(SURVIVAL_COLUMNS))
        p = math.nan
        if len(followed):
            p = km_by_group(
                followed["pfs_months"], followed["event"], predicted_groups(followed["score"], threshold)
            ).logrank_p
        entry["logrank_p"] = None if not math.isfinite(p) else float(p)
        if len(followed) < len(rows):
            notes.append(f"{model}: {len(rows) - len(followed)} patient(s) without follow-up left out of the log-rank test.")
        if entry["logrank_p"] is None:
            notes.append(f"{model}: log-rank p undefined (a predicted group is empty or no event was observed).")
    return entry, notes


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
