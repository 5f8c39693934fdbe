"""The reliability diagram: observed frequency of label 1 against the mean predicted probability, per bin.

A calibrated model's points lie on the diagonal. The bins are those of the expected
calibration error (:mod:`wsi_pipeline.scoring.calibration`), and each point is annotated
with its number of rows, since a bin of three patients says little.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_pipeline.scoring.calibration import DEFAULT_BINS, reliability_bins
from wsi_pipeline.scoring.formatting import format_interval
from wsi_pipeline.scoring.plots import _add_caption, _new_figure, _save


def plot_reliability(
    predictions: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    label_column: str = "label",
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    n_bins: int = DEFAULT_BINS,
    ci_level: float = 0.95,
    caption: str | None = None,
) -> Path:
    """Draw one reliability curve per model.

    Parameters
    ----------
    predictions
        Rows with ``model``, ``score`` (probability of class 1) and the label column (0/1).
    path
        Output PNG (written atomically).
    label_column
        The label column.
    metrics
        Optional metrics per model; their ``ece`` entries go into the legend.
    n_bins
        Equal-width probability bins.
    ci_level
        Confidence level of the intervals in the legend (for its title).
    caption
        A line under the plot.

    Returns
    -------
    Path
        ``path``.
    """
    fig = _new_figure(6.0, 6.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1.0, label="perfect calibration")
    for model, rows in predictions.groupby("model", sort=True):
        bins = reliability_bins(rows[label_column].to_numpy(), rows["score"].to_numpy(), n_bins)
        label = str(model)
        if metrics is not None and model in metrics and "ece" in metrics[model]:
            label += f": ECE {format_interval(metrics[model]['ece'])}"
        line = ax.plot(bins.mean_predicted, bins.observed, marker="o", linewidth=1.5, label=label)[0]
        for x, y, n in zip(bins.mean_predicted, bins.observed, bins.count, strict=True):
            ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=6.5, color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("Mean predicted probability (per bin)")
    ax.set_ylabel("Observed fraction of label 1 (per bin)")
    ax.set_title(f"Reliability diagram, {n_bins} equal-width bins (numbers: rows per bin)\n"
                 f"ECE [{ci_level * 100:g}% CI, patient bootstrap]")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _add_caption(fig, caption)
    return _save(fig, path)
