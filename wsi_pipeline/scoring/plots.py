"""ROC, scatter and Kaplan-Meier figures, written as PNG.

Which figure a task gets is its ``plot_kind`` (:func:`plot_task`): ROC curves for a binary
task, one-vs-rest ROC curves per class for a multiclass task, predicted against true for a
regression task, none for survival; Kaplan-Meier curves of the task's two predicted groups
(:meth:`~wsi_pipeline.mil.tasks.base.Task.risk_groups`) whenever the table has follow-up.

Figures are built on an explicit Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``) instead of ``pyplot``: no global backend is switched, nothing is left
open between calls, and plotting is safe inside Dask worker threads. Importing this module
does not touch the user's matplotlib configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from lifelines.plotting import add_at_risk_counts
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.bootstrap import bootstrap_ci
from wsi_pipeline.scoring.formatting import format_interval, format_p
from wsi_pipeline.scoring.layout import PR_PLOT, RELIABILITY_PLOT, TASK_PLOTS
from wsi_pipeline.scoring.predictions import (
    follow_up_columns,
    validate_predictions,
)
from wsi_pipeline.scoring.survival import km_by_group

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task
    from wsi_pipeline.scoring.survival_metrics import RiskCutoff

_DPI = 150


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)  # attaches the Agg canvas to fig
    return fig


def _add_caption(fig: Figure, caption: str | None) -> None:
    """Lay the figure out, leaving room for a caption line at the bottom when there is one."""
    if not caption:
        fig.tight_layout()
        return
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    # Plots travel alone (slides, chats): what produced them must travel with them.
    fig.text(0.5, 0.012, caption, ha="center", va="bottom", fontsize=7.5, color="firebrick" if "DEMO" in caption else "0.3")


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        # format is explicit because the temporary name does not end in .png
        fig.savefig(tmp, format="png", dpi=_DPI)
    return Path(path)


def plot_roc(
    predictions: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    caption: str | None = None,
    ci_level: float = 0.95,
) -> Path:
    """Draw one ROC curve per model, with AUC and its confidence interval in the legend.

    Parameters
    ----------
    predictions
        Predictions table (see :mod:`wsi_pipeline.scoring.predictions`).
    path
        Output PNG file (written atomically; parent created).
    metrics
        Optional metrics as returned by ``score_predictions``; its ``auc`` entries are used
        for the legend. Without it, AUC intervals are bootstrapped here (``n_resamples``,
        ``seed``).
    n_resamples, seed
        Bootstrap settings, used only when ``metrics`` is not given.
    caption
        A line printed under the plot (e.g. the encoder, flagged when it is a demo).
    ci_level
        Confidence level of the intervals (named in the title; used when bootstrapping here).

    Returns
    -------
    Path
        ``path``.
    """
    df = validate_predictions(predictions)
    fig = _new_figure(6.0, 6.0)
    ax = fig.add_subplot()
    for model, rows in df.groupby("model", sort=True):
        y, s = rows["label"].to_numpy(), rows["score"].to_numpy()
        if metrics is not None and model in metrics:
            auc_entry = metrics[model]["auc"]
        else:
            auc_entry = bootstrap_ci(y, s, "auc", n_resamples=n_resamples, level=ci_level, seed=seed).as_dict()
        label = f"{model}: AUC {format_interval(auc_entry)} (n={len(rows)})"
        if y.min() == y.max():
            # No curve exists with one class; keep the model visible in the legend anyway.
            ax.plot([], [], " ", label=f"{model}: AUC n/a (one class only, n={len(rows)})")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, linewidth=1.8, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1.0, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(f"ROC, pooled out-of-fold predictions\nAUC [{ci_level * 100:g}% CI, patient bootstrap]")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _add_caption(fig, caption)
    return _save(fig, path)


def plot_km(
    predictions: pd.DataFrame,
    path: str | os.PathLike[str],
    model: str,
    *,
    threshold: float = 0.5,
    positive_name: str = "responder",
    task: Task | None = None,
    caption: str | None = None,
    risk_cutoff: RiskCutoff | None = None,
) -> Path:
    """Kaplan-Meier curves of one model's two predicted groups (the task's risk groups).

    A binary task splits patients by ``score >= threshold`` (predicted responders against
    non-responders); a survival task by its ``risk`` at or above the median. Patients
    without follow-up (an empty time or event) are left out. The log-rank p-value is in the
    title and the numbers at risk are printed under the time axis.

    Parameters
    ----------
    predictions
        Predictions table with follow-up columns (``pfs_months`` and ``event``, or a
        survival task's time and event columns).
    path
        Output PNG file (written atomically; parent created).
    model
        Which model's predictions to split by.
    threshold, positive_name
        The default binary task's threshold and what its class 1 is called ("responder"),
        when ``task`` is not given.
    task
        The task whose groups are compared (its ``risk_groups``).
    caption
        A line printed under the plot.
    risk_cutoff
        A survival task's cut-off fixed elsewhere (on validation rows) instead of the median.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    WSIPipelineError
        If the follow-up columns are missing, the model is not in the table, none of its
        patients has follow-up, or the task has no predicted groups.
    """
    if task is None:
        from wsi_pipeline.mil.tasks.binary import BinaryTask
        from wsi_pipeline.mil.tasks.settings import BinaryConfig

        task = BinaryTask(BinaryConfig(threshold=threshold, positive_name=positive_name, negative_name=f"non-{positive_name}"))
    df = validate_predictions(predictions, task=task)
    columns = follow_up_columns(df, task)
    if columns is None:
        raise WSIPipelineError(
            "predictions have no survival columns",
            where="predictions table",
            fix=f"add columns {', '.join(task.follow_up_columns)} to draw Kaplan-Meier curves",
        )
    time, event = columns
    rows = df[df["model"] == model]
    if rows.empty:
        raise WSIPipelineError(
            f"no predictions for model '{model}'",
            where="predictions table",
            fix=f"choose one of: {', '.join(sorted(df['model'].unique()))}",
        )
    rows = rows[rows["repeat"] == rows["repeat"].min()].dropna(subset=[time, event])
    if rows.empty:
        raise WSIPipelineError(
            f"no patient of model '{model}' has follow-up ({time} and {event} are empty)",
            where="predictions table",
            fix=f"fill in {time} and {event} from the cohort table",
        )
    split = (risk_cutoff.groups(rows["risk"]), risk_cutoff.labels()) if risk_cutoff is not None else task.risk_groups(rows)
    if split is None:
        raise WSIPipelineError(f"a {task.name} task has no predicted groups to compare", where="predictions table",
                               fix="draw Kaplan-Meier curves for a binary or survival task")
    groups, names = split
    km = km_by_group(rows[time], rows[event], groups, labels=names)

    fig = _new_figure(7.5, 6.0)
    ax = fig.add_subplot()
    # The positive (high-risk) group first, so the legend reads the same way in every report.
    shown = [g for g in (True, False) if g in km.fitters]
    for group, color in zip(shown, ("tab:blue", "tab:red")):
        km.fitters[group].plot_survival_function(
            ax=ax, ci_show=True, color=color,
            label=f"{names[group]}: n={km.n[group]}, events={km.n_events[group]}",
        )
    ax.set_xlim(left=0)
    progression = time == "pfs_months"
    ax.set_xlabel("Months" if progression else time)
    ax.set_ylabel("Progression-free survival probability" if progression else f"Probability of no event ({event})")
    ax.set_ylim(0, 1.05)
    why = " (only one predicted group)" if len(shown) < 2 else ""
    ax.set_title(f"{model}: {'progression-free survival' if progression else 'survival'} by predicted group\n"
                 f"log-rank p = {format_p(km.logrank_p)}{why}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    short = {g: names[g].split(" (")[0] for g in shown}
    add_at_risk_counts(*(km.fitters[g] for g in shown), ax=ax, fig=fig, rows_to_show=["At risk"],
                       labels=[short[g] for g in shown])
    _add_caption(fig, caption)
    return _save(fig, path)


def plot_task(
    task: Task,
    predictions: pd.DataFrame,
    plots_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    caption: str | None = None,
    ci_level: float = 0.95,
) -> Path | None:
    """Draw the task's figure of the pooled out-of-fold predictions (see the module docstring).

    Parameters
    ----------
    task
        The task (bound: a multiclass task knows its classes).
    predictions
        A validated predictions table for the task, one repeat.
    plots_dir
        Folder of the plots; the file is named by :data:`~wsi_pipeline.scoring.layout.TASK_PLOTS`.
    metrics, caption, ci_level
        As for :func:`plot_roc`.

    Returns
    -------
    Path or None
        The figure, or ``None`` for a task without one (survival).
    """
    if task.plot_kind is None:
        return None
    path = Path(plots_dir) / TASK_PLOTS[task.plot_kind]
    if task.plot_kind == "roc":
        # The precision-recall figure beside the ROC: with few positives it shows what the ROC hides.
        from wsi_pipeline.scoring.pr_plot import plot_pr

        plot_pr(predictions, Path(plots_dir) / PR_PLOT, label_column=task.target_columns[0], metrics=metrics, caption=caption,
                ci_level=ci_level)
        # And how far the predicted probabilities are from observed frequencies (the ECE's picture).
        from wsi_pipeline.scoring.reliability_plot import plot_reliability

        plot_reliability(predictions, Path(plots_dir) / RELIABILITY_PLOT, label_column=task.target_columns[0], metrics=metrics,
                         caption=caption, ci_level=ci_level)
        return plot_roc(predictions, path, metrics=metrics, caption=caption, ci_level=ci_level)
    if task.plot_kind == "roc_ovr":
        return plot_roc_one_vs_rest(predictions, path, task, caption=caption)
    return plot_scatter(predictions, path, task, metrics=metrics, caption=caption)


def _model_grid(n: int) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = _new_figure(4.2 * cols, 4.2 * rows + 0.3)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def plot_roc_one_vs_rest(predictions: pd.DataFrame, path: str | os.PathLike[str], task: Task, *, caption: str | None = None) -> Path:
    """One panel per model: each class's one-vs-rest ROC curve from its ``prob_<class>`` column.

    Parameters
    ----------
    predictions
        A validated multiclass predictions table (one repeat).
    path
        Output PNG file.
    task
        The bound multiclass task (its ``label_column`` and classes).
    caption
        A line printed under the plot.
    """
    label = task.target_columns[0]
    models = sorted(predictions["model"].unique())
    fig, axes = _model_grid(len(models))
    for ax, model in zip(axes, models):
        rows = predictions[predictions["model"] == model]
        truth = rows[label].astype(str).to_numpy()
        for name in task.classes:  # type: ignore[attr-defined]  # a multiclass task
            positive = truth == name
            if positive.all() or not positive.any():
                ax.plot([], [], " ", label=f"{name}: n/a (n={int(positive.sum())})")
                continue
            fpr, tpr, _ = roc_curve(positive, rows[f"prob_{name}"].to_numpy())
            ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} vs rest (n={int(positive.sum())})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1.0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
        ax.set_title(f"{model}: one-vs-rest ROC", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    _add_caption(fig, caption)
    return _save(fig, path)


def plot_scatter(
    predictions: pd.DataFrame,
    path: str | os.PathLike[str],
    task: Task,
    *,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    caption: str | None = None,
) -> Path:
    """One panel per model: predicted against true target, with the identity line and R².

    Parameters
    ----------
    predictions
        A validated regression predictions table (one repeat).
    path
        Output PNG file.
    task
        The regression task (its target column).
    metrics
        Optional scored metrics; their ``r2`` goes in each panel's title.
    caption
        A line printed under the plot.
    """
    target = task.target_columns[0]
    models = sorted(predictions["model"].unique())
    fig, axes = _model_grid(len(models))
    values = np.concatenate([predictions[target].to_numpy(dtype=float), predictions["prediction"].to_numpy(dtype=float)])
    low, high = float(values.min()), float(values.max())
    for ax, model in zip(axes, models):
        rows = predictions[predictions["model"] == model]
        ax.scatter(rows[target], rows["prediction"], s=14, alpha=0.8)
        ax.plot([low, high], [low, high], linestyle="--", color="0.6", linewidth=1.0)
        r2 = metrics[model]["r2"] if metrics is not None and model in metrics and "r2" in metrics[model] else None
        title = f"{model}: R\u00b2 {format_interval(r2)}" if r2 is not None else model
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"true {target}")
        ax.set_ylabel(f"predicted {target}")
        ax.grid(alpha=0.3)
    _add_caption(fig, caption)
    return _save(fig, path)
