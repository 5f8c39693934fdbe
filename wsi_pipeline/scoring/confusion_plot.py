"""Confusion matrices of a multiclass model as a figure: counts beside row-normalised proportions.

Counts say how many patients a cell holds; the row-normalised matrix (each true class's row
divided by its total, the class's recall on the diagonal) makes rare classes readable. Both
come from metrics.json's ``confusion`` entry (:func:`~wsi_pipeline.scoring.multiclass_metrics.confusion_entry`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.scoring.layout import confusion_plot_name
from wsi_pipeline.scoring.multiclass_metrics import CONFUSION_KEY
from wsi_pipeline.scoring.plots import _add_caption, _new_figure, _save


def plot_confusion(confusion: Mapping[str, Any], path: str | os.PathLike[str], model: str, *, caption: str | None = None) -> Path:
    """Draw one model's confusion matrix as counts and row-normalised, side by side.

    Parameters
    ----------
    confusion
        ``{"classes", "counts", "normalised"}`` (metrics.json's ``confusion``).
    path
        Output PNG file (written atomically).
    model
        The model's name (the title).
    caption
        A line printed under the plot.

    Returns
    -------
    Path
        ``path``.
    """
    classes = list(confusion["classes"])
    counts = np.asarray(confusion["counts"], dtype=np.float64)
    normalised = np.array([[np.nan if v is None else v for v in row] for row in confusion["normalised"]], dtype=np.float64)
    size = 2.6 + 0.45 * len(classes)
    fig = _new_figure(2 * size + 1.0, size + 0.6)
    panels = ((counts, "counts", "{:.0f}", counts.max() or 1.0), (normalised, "row-normalised (recall on the diagonal)", "{:.2f}", 1.0))
    for i, (matrix, what, fmt, top) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        image = ax.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=top)
        for (r, c), value in np.ndenumerate(matrix):
            text = "n/a" if np.isnan(value) else fmt.format(value)
            ax.text(c, r, text, ha="center", va="center", fontsize=8, color="white" if value > 0.6 * top else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(f"{model}: {what}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    _add_caption(fig, caption)
    return _save(fig, path)


def plot_confusions(metrics: Mapping[str, Mapping[str, Any]], plots_dir: str | os.PathLike[str], *, caption: str | None = None) -> list[Path]:
    """Draw ``confusion_<model>.png`` for every model whose metrics carry a confusion matrix (multiclass)."""
    return [plot_confusion(entry[CONFUSION_KEY], Path(plots_dir) / confusion_plot_name(model), model, caption=caption)
            for model, entry in metrics.items() if CONFUSION_KEY in entry]
