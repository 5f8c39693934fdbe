"""The precision-recall figure of a binary task: one curve per model, average precision in the legend.

With few responders, the ROC curve can look good while most predicted responders are not: the
precision-recall curve shows that directly, and its chance level is the prevalence (drawn as a
line), not the ROC's diagonal. The legend's average precision is the metrics.json value with its
patient-bootstrap interval; the curve is scikit-learn's ``precision_recall_curve`` on the pooled
out-of-fold predictions of the first repeat, as the ROC figure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from wsi_pipeline.scoring.formatting import format_interval, format_value
from wsi_pipeline.scoring.plots import _add_caption, _new_figure, _save


def plot_pr(
    predictions: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    label_column: str = "label",
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    caption: str | None = None,
    ci_level: float = 0.95,
) -> Path:
    """Draw one precision-recall curve per model.

    Parameters
    ----------
    predictions
        One repeat of a validated binary predictions table (``model``, ``score``, the label).
    path
        Output PNG (written atomically).
    label_column
        The 0/1 label column.
    metrics
        Model -> metrics.json entry; its ``average_precision`` (with interval) labels the
        legend. A model without one is labelled with scikit-learn's average precision alone.
    caption
        A line under the plot (the encoder, flagged when a demo).
    ci_level
        The level of the legend's intervals (named in the title).

    Returns
    -------
    Path
        ``path``.
    """
    fig = _new_figure(6.0, 6.0)
    ax = fig.add_subplot()
    prevalence = None
    for model, rows in predictions.groupby("model", sort=True):
        y, s = rows[label_column].to_numpy(dtype=float), rows["score"].to_numpy(dtype=float)
        if y.min() == y.max():
            ax.plot([], [], " ", label=f"{model}: AP n/a (one class only, n={len(rows)})")
            continue
        entry = (metrics or {}).get(model, {}).get("average_precision")
        shown = format_interval(entry) if entry else format_value(average_precision_score(y, s))
        precision, recall, _ = precision_recall_curve(y, s)
        # Steps, as average precision sums them (no interpolation between operating points).
        ax.step(recall, precision, where="post", linewidth=1.8, label=f"{model}: AP {shown} (n={len(rows)})")
        prevalence = float(y.mean())
    if prevalence is not None:
        ax.axhline(prevalence, linestyle="--", color="0.6", linewidth=1.0, label=f"chance (prevalence {prevalence:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (PPV)")
    ax.set_title(f"Precision-recall, pooled out-of-fold predictions\nAP [{ci_level * 100:g}% CI, patient bootstrap]")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _add_caption(fig, caption)
    return _save(fig, path)
