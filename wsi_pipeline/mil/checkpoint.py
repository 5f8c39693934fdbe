"""A fold's trained model and its training record, saved in the run folder and loaded back.

Every (repeat, fold, aggregator) of a run gets a folder ``training/<fold name>-<aggregator>/``
(:func:`fold_folder`) with two files:

``model.pt``
    What rebuilding the model needs, and nothing else: the state dict (CPU tensors), the
    aggregator's name and every setting it was built with, ``in_dim`` and ``n_outputs``, the
    task (type, settings and what it learned from the fold's fit patients), the feature
    standardisation's mean and std when the fold used one, and the features id (which
    encoder, or which instance table, the bags came from). Plain tensors and Python values
    only, so it loads with ``torch.load(weights_only=True)``: no pickled code is executed.
``history.json``
    The training record: per-epoch curves, the chosen epoch, why training stopped, the
    settings, the seconds and the device, and, with a grid, every grid point's inner score.

:func:`load_fold_model` rebuilds the aggregator in eval mode from ``model.pt`` alone; it is
what deployment (attention maps of new slides) starts from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from wsi_pipeline.atomic import atomic_path, atomic_write_text
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.registry import build_aggregator
from wsi_pipeline.mil.standardise import FeatureStats, StandardisedBags

if TYPE_CHECKING:
    from wsi_pipeline.mil.aggregators.base import Aggregator
    from wsi_pipeline.mil.splits import FoldPlan
    from wsi_pipeline.mil.tasks.base import Task
    from wsi_pipeline.mil.train import TrainConfig

#: The folder of a run's fold checkpoints, inside its output folder.
TRAINING_DIR = "training"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
#: Bumped when ``model.pt``'s content changes shape, so an old file is refused with a clear message.
CHECKPOINT_FORMAT = 1

#: History entries that are objects, not record: the fitted task and the model are in model.pt,
#: the fold's bags are data (mil.cv.train_fold puts them there for nested CV's inner scores).
_NOT_RECORDED = frozenset({"task", "model", "fold_bags", "feature_stats", "test_keys"})


def fold_folder(output_dir: str | os.PathLike[str], plan: FoldPlan, aggregator: str) -> Path:
    """``<output_dir>/training/<plan.name>-<aggregator>``: one fold's checkpoint folder.

    Parameters
    ----------
    output_dir
        The run's output folder.
    plan
        The fold (its name is ``fold<k>`` or ``repeat<r>-fold<k>``).
    aggregator
        The aggregator's registered name.
    """
    return Path(output_dir) / TRAINING_DIR / f"{plan.name}-{aggregator}"


@dataclass(frozen=True)
class FoldModelInfo:
    """What a checkpoint says about its model, besides the weights.

    Attributes
    ----------
    aggregator
        Registered aggregator name.
    params
        Every setting the aggregator was built with.
    in_dim, n_outputs
        Feature width it reads; outputs per bag.
    task
        The fitted task (its loss statistics from the fold's fit patients): ``task.predictions``
        turns the model's outputs into the run's prediction columns.
    feature_stats
        The fold's feature standardisation (fit patients' mean and std), or ``None`` when the
        fold trained on the features as stored.
    features_id
        Where the bags came from: the encoder's store id, or the instance table / ``.h5`` folder.
    repeat, fold
        Which fold of the run trained it.
    """

    aggregator: str
    params: dict[str, Any]
    in_dim: int
    n_outputs: int
    task: Task
    feature_stats: FeatureStats | None
    features_id: str | None
    repeat: int
    fold: int

    def prepare(self, bags: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """``bags`` as the model reads them: standardised with the fold's statistics when it used any."""
        return bags if self.feature_stats is None else StandardisedBags(bags, self.feature_stats)


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data: numpy scalars and arrays to Python, non-finite floats to ``None``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN; an undefined score (one-class AUC) reads as null
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def stop_reason(history: Mapping[str, Any], config: TrainConfig) -> str:
    """Why training ended: early stopping after ``patience`` epochs without improvement, or ``max_epochs``."""
    if history.get("stopped_early"):
        return f"early stopping: no better validation loss for {config.patience} epoch(s) after epoch {history['best_epoch']}"
    return f"max_epochs ({config.max_epochs}) reached"


def history_record(
    history: Mapping[str, Any],
    *,
    aggregator: str,
    plan: FoldPlan,
    config: TrainConfig,
    features_id: str | None,
    device: str,
) -> dict[str, Any]:
    """The JSON-able training record of one fold: what ``history.json`` holds (less the checkpoint's digest).

    Every entry of the history that is data (curves, chosen epoch, counts, seconds, the grid
    search) is kept as it is, so the file shows whatever training recorded; the objects (task,
    model, bags) are not.
    """
    record = {key: _plain(value) for key, value in history.items() if key not in _NOT_RECORDED}
    settings = dataclasses.asdict(config)
    settings["aggregator_params"] = config.params_for(aggregator)  # this model's, not every aggregator's
    record.update(
        aggregator=aggregator,
        repeat=plan.repeat,
        fold=plan.fold,
        features_id=features_id,
        device=device,
        stop_reason=stop_reason(history, config),
        settings=_plain(settings),
    )
    return record


def save_fold_model(
    folder: str | os.PathLike[str],
    model: Aggregator,
    history: Mapping[str, Any],
    *,
    aggregator: str,
    plan: FoldPlan,
    config: TrainConfig,
    features_id: str | None,
    device: str,
) -> Path:
    """Write ``model.pt`` and ``history.json`` of one fold into ``folder``, each atomically.

    ``model.pt`` is written first and ``history.json`` last, carrying the sha256 of the
    ``model.pt`` it describes: each file is whole (a killed run leaves the previous file or the
    new one, never half of one), and a pair from two different runs is told apart by the digest.

    Parameters
    ----------
    folder
        The fold's folder (:func:`fold_folder`); created when missing.
    model
        The trained aggregator (the chosen epoch's weights).
    history
        :func:`~wsi_pipeline.mil.train.fit_aggregator`'s history, as
        :func:`~wsi_pipeline.mil.cv.train_fold` completes it (``task``, ``feature_stats``).
    aggregator, plan, config, features_id, device
        Which aggregator and fold, the training settings, where the bags came from, and the
        device it trained on.

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    task: Task = history["task"]
    stats: FeatureStats | None = history.get("feature_stats")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "aggregator": aggregator,
        "params": dict(history.get("aggregator_params") or config.params_for(aggregator)),
        "in_dim": int(model.in_dim),
        "n_outputs": int(model.n_outputs),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "task": {"type": task.name, "settings": _plain(dataclasses.asdict(task.config)), "fitted_state": _plain(task.fitted_state)},
        "standardise": None if stats is None else {"mean": torch.as_tensor(stats.mean), "std": torch.as_tensor(stats.std)},
        "features_id": features_id,
        "repeat": plan.repeat,
        "fold": plan.fold,
    }
    with atomic_path(folder / MODEL_FILE) as tmp:
        torch.save(payload, tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    record = history_record(history, aggregator=aggregator, plan=plan, config=config, features_id=features_id, device=device)
    record["model_sha256"] = digest
    atomic_write_text(folder / HISTORY_FILE, json.dumps(record, indent=1) + "\n")
    return folder


def _fitted_task(spec: Mapping[str, Any]) -> Task:
    """The fitted task a checkpoint describes: its type and settings, with what it learned."""
    from wsi_pipeline.mil.tasks.registry import TASKS, task_config

    kind, settings = task_config({"type": spec["type"], **spec["settings"]})
    return TASKS[kind][0](settings, **spec["fitted_state"])


def load_fold_model(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Aggregator, FoldModelInfo]:
    """Rebuild a fold's trained aggregator from its ``model.pt``, in eval mode.

    Parameters
    ----------
    folder
        The fold's folder (``<run>/training/<fold>-<aggregator>``) or its ``model.pt``.
    device
        Where to put the model.

    Returns
    -------
    model
        The aggregator with the saved weights, in eval mode.
    info
        Its metadata (:class:`FoldModelInfo`); ``info.task.predictions(bag_outputs(model,
        info.prepare(bags), ids))`` gives the run's prediction columns for new bags.

    Raises
    ------
    WSIPipelineError
        When the file is missing or is not a checkpoint of this format.
    """
    path = Path(folder)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise WSIPipelineError(
            f"no {MODEL_FILE} at {path}",
            where=str(path.parent),
            fix=f"give a fold folder of a run's {TRAINING_DIR}/ (the train stage writes one per fold and aggregator)",
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise WSIPipelineError(
            f"{path.name} is not a wsi-pipeline fold checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})",
            where=str(path),
            fix="re-run the train stage with this version of wsi-pipeline",
        )
    model = build_aggregator(payload["aggregator"], payload["in_dim"], payload["n_outputs"], **payload["params"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    standardise = payload["standardise"]
    stats = None if standardise is None else FeatureStats(standardise["mean"].numpy(), standardise["std"].numpy())
    info = FoldModelInfo(
        aggregator=payload["aggregator"],
        params=dict(payload["params"]),
        in_dim=payload["in_dim"],
        n_outputs=payload["n_outputs"],
        task=_fitted_task(payload["task"]),
        feature_stats=stats,
        features_id=payload["features_id"],
        repeat=payload["repeat"],
        fold=payload["fold"],
    )
    return model, info
