"""A run's training record: each fold's checkpoint written where it trained, and ``training.csv``.

A training task calls :func:`record_fold` once its fold is trained: the fold's ``model.pt`` and
``history.json`` go to ``training/<fold>-<aggregator>/`` (:mod:`~wsi_pipeline.mil.checkpoint`),
and the task's outcome carries one row of ``training.csv`` and the fold's loss curves (for the
curves figure), small plain values. The train stage writes the rows with
:func:`write_training_table` once every fold is done.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.mil.checkpoint import (
    HISTORY_FILE,
    MODEL_FILE,
    TRAINING_DIR,
    fold_folder,
    save_fold_model,
)

if TYPE_CHECKING:
    from wsi_pipeline.mil.splits import FoldPlan
    from wsi_pipeline.mil.train import TrainConfig

#: The table's name in a run folder.
TRAINING_FILE = "training.csv"
#: Its columns: one row per (repeat, fold, aggregator). ``checkpoint`` is the fold's folder,
#: relative to the run folder; ``grid_chosen`` and ``grid_scores`` (JSON) are empty without a grid.
TRAINING_COLUMNS = (
    "model", "repeat", "fold", "best_epoch", "epochs_run", "stopped_early", "best_val_loss", "best_val_score",
    "selection_metric", "seconds", "device", "checkpoint", "grid_chosen", "grid_scores",
)


def _number(value: Any) -> float | None:
    """A float for the table (``None`` when undefined: an AUC on one class)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def training_row(
    history: Mapping[str, Any], *, plan: FoldPlan, aggregator: str, seconds: float, device: str, checkpoint: str | None
) -> dict[str, Any]:
    """One row of ``training.csv``: how a fold's model was chosen and trained.

    Parameters
    ----------
    history
        The fold's training history (:func:`~wsi_pipeline.mil.cv.train_fold`, with
        ``grid_search`` under nested CV).
    plan, aggregator
        Which fold and aggregator.
    seconds
        Wall time of the fold's training, a grid search included.
    device
        Where it trained.
    checkpoint
        The fold's checkpoint folder, relative to the run folder (``None``: not written).
    """
    search = history.get("grid_search")
    return {
        "model": aggregator,
        "repeat": plan.repeat,
        "fold": plan.fold,
        "best_epoch": int(history["best_epoch"]),
        "epochs_run": int(history["epochs_run"]),
        "stopped_early": bool(history["stopped_early"]),
        "best_val_loss": _number(history["best_val_loss"]),
        "best_val_score": _number(history.get("best_val_score")),
        "selection_metric": history.get("selection_metric"),
        "seconds": round(float(seconds), 3),
        "device": device,
        "checkpoint": checkpoint,
        "grid_chosen": json.dumps(search["chosen"]) if search else None,
        "grid_scores": json.dumps([_number(score) for score in search["scores"]]) if search else None,
    }


def fold_curves(history: Mapping[str, Any]) -> dict[str, Any]:
    """The fold's per-epoch training and validation losses and its chosen epoch: what the curves figure draws."""
    return {
        "train_loss": [float(v) for v in history["train_loss"]],
        "val_loss": [float(v) for v in history["val_loss"]],
        "best_epoch": int(history["best_epoch"]),
    }


def record_fold(
    history: Mapping[str, Any],
    *,
    plan: FoldPlan,
    aggregator: str,
    config: TrainConfig,
    output_dir: str | os.PathLike[str] | None,
    features_id: str | None,
    device: str,
    seconds: float,
) -> dict[str, Any]:
    """Write a trained fold's checkpoint into the run folder and return what its task's outcome carries.

    Parameters
    ----------
    history
        :func:`~wsi_pipeline.mil.cv.train_fold`'s history (it holds the model).
    plan, aggregator
        Which fold and aggregator.
    config
        The settings the model was trained with (under nested CV, the chosen grid point's).
    output_dir
        The run folder; ``None`` writes nothing (a fold trained outside a run).
    features_id, device, seconds
        Where the bags came from; where it trained; the fold's wall time.

    Returns
    -------
    dict
        ``training``: the fold's :func:`training_row`; ``curves``: :func:`fold_curves`.
    """
    checkpoint = None
    if output_dir is not None:
        folder = fold_folder(output_dir, plan, aggregator)
        record = {**history, "fold_seconds": seconds}
        save_fold_model(folder, history["model"], record, aggregator=aggregator, plan=plan, config=config,
                        features_id=features_id, device=device)
        checkpoint = folder.relative_to(Path(output_dir)).as_posix()
    row = training_row(history, plan=plan, aggregator=aggregator, seconds=seconds, device=device, checkpoint=checkpoint)
    return {"training": row, "curves": fold_curves(history)}


def remove_stale_checkpoints(output_dir: str | os.PathLike[str], kept: Sequence[str]) -> list[Path]:
    """Remove the fold folders of ``training/`` that this run did not write (an earlier run's other folds or models).

    So ``training/`` holds exactly the folds ``training.csv`` lists. Only folders holding nothing
    but a checkpoint's files are removed, file by file; anything else put there is left alone.

    Parameters
    ----------
    output_dir
        The run folder.
    kept
        The checkpoint folders of this run, relative to it (``training.csv``'s ``checkpoint``).

    Returns
    -------
    list of Path
        The folders removed.
    """
    root = Path(output_dir) / TRAINING_DIR
    keep = {Path(output_dir) / path for path in kept}
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        files = list(folder.iterdir()) if folder.is_dir() else []
        if folder in keep or not files or any(f.name not in {MODEL_FILE, HISTORY_FILE} for f in files):
            continue
        for file in files:
            file.unlink()
        folder.rmdir()
        removed.append(folder)
    return removed


def training_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``training.csv`` as a table: the rows by model, repeat and fold, in :data:`TRAINING_COLUMNS` order."""
    frame = pd.DataFrame(list(rows), columns=list(TRAINING_COLUMNS))
    return frame.sort_values(["model", "repeat", "fold"], kind="stable").reset_index(drop=True)


def write_training_table(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write :func:`training_frame` as CSV, atomically.

    Parameters
    ----------
    rows
        One :func:`training_row` per (repeat, fold, aggregator).
    path
        The CSV file, usually ``<run>/training.csv``.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        training_frame(rows).to_csv(tmp, index=False)
    return Path(path)
