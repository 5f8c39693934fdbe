"""ROC and Kaplan-Meier figures, written as PNG.

Figures are built on an explicit Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``) instead of ``pyplot``: no global backend is switched, nothing is left
open between calls, and plotting is safe inside Dask worker threads. Importing this module
does not touch the user's matplotlib configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from lifelines.plotting import add_at_risk_counts
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.scoring.bootstrap import bootstrap_ci
from wsi_pipeline.scoring.formatting import format_interval, format_p
from wsi_pipeline.scoring.predictions import (
    SURVIVAL_COLUMNS,
    has_survival,
    validate_predictions,
)
from wsi_pipeline.scoring.survival import km_by_group, predicted_groups

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
) -> Path:
    """Draw one ROC curve per model, with AUC and its 95% CI in the legend.

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
            auc_entry = bootstrap_ci(y, s, "auc", n_resamples=n_resamples, seed=seed).as_dict()
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
    ax.set_title("ROC, pooled out-of-fold predictions\nAUC [95% CI, patient bootstrap]")
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
    caption: str | None = None,
) -> Path:
    """Kaplan-Meier curves of predicted responders vs non-responders for one model.

    Patients are split by ``score >= threshold``; patients without follow-up (empty
    ``pfs_months`` or ``event``) are left out. The log-rank p-value is in the title and the
    numbers at risk are printed under the time axis.

    Parameters
    ----------
    predictions
        Predictions table with ``pfs_months`` and ``event`` columns.
    path
        Output PNG file (written atomically; parent created).
    model
        Which model's predictions to split by.
    threshold
        Decision threshold for the predicted groups.
    positive_name
        What class 1 is called in the legend ("responder" for RESPRED-UC).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    WSIPipelineError
        If the survival columns are missing, the model is not in the table, or none of its
        patients has follow-up.
    """
    df = validate_predictions(predictions)
    if not has_survival(df):
        raise WSIPipelineError(
            "predictions have no survival columns",
            where="predictions table",
            fix=f"add columns {', '.join(SURVIVAL_COLUMNS)} to draw Kaplan-Meier curves",
        )
    rows = df[df["model"] == model]
    if rows.empty:
        raise WSIPipelineError(
            f"no predictions for model '{model}'",
            where="predictions table",
            fix=f"choose one of: {', '.join(sorted(df['model'].unique()))}",
        )
    rows = rows.dropna(subset=list(SURVIVAL_COLUMNS))
    if rows.empty:
        raise WSIPipelineError(
            f"no patient of model '{model}' has follow-up (pfs_months and event are empty)",
            where="predictions table",
            fix="fill in pfs_months and event from the cohort table",
        )
    groups = predicted_groups(rows["score"], threshold)
    names = {
        True: f"predicted {positive_name} (score \u2265 {threshold:.2f})",
        False: f"predicted non-{positive_name} (score < {threshold:.2f})",
    }
    km = km_by_group(rows["pfs_months"], rows["event"], groups, labels=names)

    fig = _new_figure(7.5, 6.0)
    ax = fig.add_subplot()
    # Responders first, so the legend reads the same way in every report.
    shown = [g for g in (True, False) if g in km.fitters]
    for group, color in zip(shown, ("tab:blue", "tab:red")):
        km.fitters[group].plot_survival_function(
            ax=ax, ci_show=True, color=color,
            label=f"{names[group]}: n={km.n[group]}, events={km.n_events[group]}",
        )
    ax.set_xlim(left=0)
    ax.set_xlabel("Months")
    ax.set_ylabel("Progression-free survival probability")
    ax.set_ylim(0, 1.05)
    why = " (only one predicted group)" if len(shown) < 2 else ""
    ax.set_title(f"{model}: progression-free survival by predicted group\nlog-rank p = {format_p(km.logrank_p)}{why}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    short = {True: f"predicted {positive_name}", False: f"predicted non-{positive_name}"}
    add_at_risk_counts(*(km.fitters[g] for g in shown), ax=ax, fig=fig, rows_to_show=["At risk"],
                       labels=[short[g] for g in shown])
    _add_caption(fig, caption)
    return _save(fig, path)
