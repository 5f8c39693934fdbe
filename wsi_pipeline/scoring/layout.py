"""Where the scoring stage puts its outputs inside ``out_dir`` (one place, shared by all)."""

from __future__ import annotations

import re

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
ROC_PLOT = "roc.png"
SCATTER_PLOT = "scatter.png"
#: A binary task's precision-recall figure, beside its ROC (:mod:`wsi_pipeline.scoring.pr_plot`).
PR_PLOT = "pr.png"
#: A binary task's reliability (calibration) diagram (:mod:`wsi_pipeline.scoring.reliability_plot`).
RELIABILITY_PLOT = "reliability.png"
#: The train stage's figure of every fold's loss curves (:mod:`wsi_pipeline.scoring.training_plot`).
TRAINING_CURVES_PLOT = "training_curves.png"
#: The file of each task plot kind (``Task.plot_kind``).
TASK_PLOTS = {"roc": ROC_PLOT, "roc_ovr": ROC_PLOT, "scatter": SCATTER_PLOT}


def safe_name(model: str) -> str:
    """A file-name-safe version of a model name (runs of other characters become ``_``).

    Parameters
    ----------
    model
        Model name as in the predictions table.

    Returns
    -------
    str
        E.g. ``"abmil/uni v2"`` -> ``"abmil_uni_v2"``.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"


def km_plot_name(model: str) -> str:
    """File name of a model's Kaplan-Meier plot: ``km_<safe model name>.png``.

    Parameters
    ----------
    model
        Model name.

    Returns
    -------
    str
        The file name, relative to the plots directory.
    """
    return f"km_{safe_name(model)}.png"


def confusion_plot_name(model: str) -> str:
    """File name of a multiclass model's confusion matrices: ``confusion_<safe model name>.png``."""
    return f"confusion_{safe_name(model)}.png"
