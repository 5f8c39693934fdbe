"""The training curves figure: each fold's training and validation loss per epoch, its chosen epoch marked.

One panel per aggregator, one colour per fold (of each repeat): the training loss dashed, the
validation loss solid, a dot on the validation loss at the epoch whose weights were kept. It
shows at a glance whether training stopped too early, ran to ``max_epochs`` still improving,
or chose a noisy epoch. Drawn on an explicit Agg canvas, as every figure of the package is
(:mod:`wsi_pipeline.scoring.plots`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps

from wsi_pipeline.scoring.plots import _add_caption, _new_figure, _save

#: Folds per panel beyond which the legend is left out (the colours would no longer tell them apart).
MAX_LEGEND_FOLDS = 10


def fold_label(repeat: int, fold: int) -> str:
    """``fold k``, or ``r<repeat> fold k`` after the first repeat."""
    return f"fold {fold}" if repeat == 0 else f"r{repeat} fold {fold}"


def plot_training_curves(
    curves: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, caption: str | None = None
) -> Path:
    """Draw every fold's loss curves, one panel per aggregator, and write the PNG atomically.

    Parameters
    ----------
    curves
        One entry per (repeat, fold, aggregator): ``model``, ``repeat``, ``fold``,
        ``train_loss`` and ``val_loss`` (one value per epoch run) and ``best_epoch``
        (0-based index of the kept epoch).
    path
        Output PNG file (parent created).
    caption
        A line printed under the figure (the workflow and encoder).

    Returns
    -------
    Path
        ``path``.
    """
    models = sorted({entry["model"] for entry in curves})
    fig = _new_figure(5.0 * max(1, len(models)), 4.2)
    for index, model in enumerate(models, start=1):
        ax = fig.add_subplot(1, max(1, len(models)), index)
        folds = sorted((e for e in curves if e["model"] == model), key=lambda e: (e["repeat"], e["fold"]))
        colours = colormaps["tab10" if len(folds) <= 10 else "tab20"]
        for k, entry in enumerate(folds):
            colour = colours(k % colours.N)
            epochs = range(1, len(entry["val_loss"]) + 1)  # epochs counted from 1 on the axis
            label = fold_label(entry["repeat"], entry["fold"])
            ax.plot(epochs, entry["train_loss"], linestyle="--", linewidth=1.0, color=colour, alpha=0.8)
            ax.plot(epochs, entry["val_loss"], linestyle="-", linewidth=1.4, color=colour, label=label)
            best = int(entry["best_epoch"])
            ax.plot([best + 1], [entry["val_loss"][best]], marker="o", markersize=6, color=colour, markeredgecolor="black")
        ax.set_title(f"{model} ({len(folds)} fold(s))")
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Loss")
        ax.grid(alpha=0.3)
        # A legend of the line styles once per panel, the folds' colours when they are few enough to tell apart.
        ax.plot([], [], linestyle="--", color="0.4", label="training loss")
        ax.plot([], [], linestyle="-", color="0.4", label="validation loss")
        ax.plot([], [], linestyle="", marker="o", color="0.4", markeredgecolor="black", label="chosen epoch")
        handles, labels = ax.get_legend_handles_labels()
        if len(folds) > MAX_LEGEND_FOLDS:
            handles, labels = handles[-3:], labels[-3:]
        ax.legend(handles, labels, fontsize=7, loc="upper right")
    _add_caption(fig, caption)
    return _save(fig, path)
