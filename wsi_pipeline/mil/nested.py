"""Nested cross-validation: choose training settings from a small grid inside each outer fold.

An outer fold's training patients (its fit and validation patients) are split again into
patient-grouped, stratified inner folds (:func:`~wsi_pipeline.mil.splits.plan_folds`, with a
seed derived from the run's seed, the repeat and the fold, so every aggregator of a fold sees
the same inner folds). Every grid point (``model.grid``) is trained on each inner fold, early
stopping on that inner fold's own validation patients, and scored by the task's loss on the
inner fold's test patients; a point's score is the mean over inner folds. The point with the
lowest score (ties: the first in grid order) is then trained on the outer fold's fit and
validation patients and predicts the outer test patients, exactly as without a grid.

The outer test patients never enter the inner folds, as fit, validation or test patients:
the choice of settings is made without them, so the outer predictions stay honest estimates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.cv import train_fold
from wsi_pipeline.mil.fusion import patient_of
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, assert_disjoint, plan_folds
from wsi_pipeline.mil.targets import encode_targets
from wsi_pipeline.mil.tasks.base import Task
from wsi_pipeline.mil.train import (
    TrainConfig,
    bag_outputs,
    default_task,
    validation_scores,
)

#: The grid settings that are TrainConfig fields of the same name (hidden_dim and dropout are
#: aggregator settings, applied through ``ModelConfig.aggregator_settings``).
TRAINING_SETTINGS = ("lr", "weight_decay", "max_instances")
#: Mixed into the inner folds' seed, so they never coincide with an outer repeat's split.
_INNER_SEED_TAG = 0x1E5


def inner_seed(seed: int, plan: FoldPlan) -> int:
    """The seed of an outer fold's inner split: a 32-bit hash of (seed, repeat, fold), the same for every aggregator."""
    return int(np.random.SeedSequence([int(seed), plan.repeat, plan.fold, _INNER_SEED_TAG]).generate_state(1)[0])


def point_config(base: TrainConfig, model: ModelConfig, aggregator: str, point: Mapping[str, Any]) -> TrainConfig:
    """``base`` with a grid point's settings: lr, weight_decay, max_instances, and hidden_dim/dropout as the model section applies them."""
    training = {key: point[key] for key in TRAINING_SETTINGS if key in point}
    params = {**base.aggregator_params, aggregator: model.aggregator_settings(aggregator, point)}
    return replace(base, **training, aggregator_params=params)


def inner_plans(plan: FoldPlan, task: Task, targets: Mapping[str, Any], inner_folds: int, val_fraction: float, seed: int) -> list[FoldPlan]:
    """The inner folds of an outer fold: its fit and validation patients split again, stratified on the task's strata.

    Raises
    ------
    LeakageError
        If an outer test patient is in an inner fold (a bug; never expected).
    WSIPipelineError
        When the outer fold's training patients are too few for ``inner_folds`` folds.
    """
    ids = sorted(plan.fit_ids + plan.val_ids)  # sorted: the split depends on who, not on the order
    strata = task.stratify_labels(encode_targets(task, targets, ids))
    try:
        plans = plan_folds(ids, strata, n_folds=inner_folds, val_fraction=val_fraction, seed=inner_seed(seed, plan),
                           single_stratum_ok=True)
    except WSIPipelineError as error:
        raise WSIPipelineError(
            f"nested CV in {plan.title}: its {len(ids)} training patients cannot be split into {inner_folds} inner folds: {error.what}",
            where="validation.inner_folds",
            fix="lower validation.inner_folds (2 is the least), use fewer outer folds, or remove model.grid",
        ) from None
    outer_training = set(ids)
    for inner in plans:
        what = f"{plan.title} inner fold {inner.fold}"
        assert_disjoint(inner.patients, plan.test_ids, f"{what} (fit, val and test) vs the outer test patients")
        if not set(inner.patients) <= outer_training:
            raise LeakageError(f"{what} holds patients outside its outer fold's training patients")
    return plans


def inner_loss(rows: pd.DataFrame, targets: Mapping[str, Any]) -> float:
    """The task's loss on an inner fold's test bags, from :func:`~wsi_pipeline.mil.cv.train_fold`'s result.

    The loss is the fitted task's (the training objective without auxiliary terms, as early
    stopping compares), over all the fold's test bags at once: a patient's bag, or each of their
    slides' with ``model.bags`` other than ``patient-early`` (each with the patient's target).
    """
    history = rows.attrs["history"]
    keys = list(history["test_keys"])
    fitted: Task = history["task"]
    y = encode_targets(fitted, {key: targets[patient_of(key)] for key in keys}, keys)
    return validation_scores(fitted, bag_outputs(history["model"], history["fold_bags"], keys), y)[0]


def nested_train_fold(
    plan: FoldPlan,
    aggregator: str,
    bags: Mapping[str, Any],
    targets: Mapping[str, Any],
    model: ModelConfig,
    seed: int,
    *,
    inner_folds: int,
    val_fraction: float,
    config: TrainConfig | None = None,
    task: Task | None = None,
    device: str | torch.device = "cpu",
    slide_names: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Choose the grid point of ``model.grid`` on inner folds of ``plan``'s training patients, then train it on ``plan``.

    Parameters
    ----------
    plan
        The outer fold.
    aggregator
        A registered aggregator name.
    bags, targets
        As for :func:`~wsi_pipeline.mil.cv.train_fold` (the bags of the outer fold's patients suffice).
    model
        The workflow's ``model`` section; its ``grid`` must be set.
    seed
        The run's seed: trains every model, and (with the repeat and fold) seeds the inner split.
    inner_folds, val_fraction
        Inner folds per outer fold (``validation.inner_folds``), and the validation fraction of
        each inner fold's training patients (``validation.val_fraction``).
    config
        The training settings the grid points start from; default ``TrainConfig.from_model(model)``.
    task, device, slide_names
        As for :func:`~wsi_pipeline.mil.cv.train_fold`.

    Returns
    -------
    pd.DataFrame
        :func:`~wsi_pipeline.mil.cv.train_fold`'s rows for the outer test patients, trained with
        the chosen point; ``attrs["history"]["grid_search"]`` records the grid: ``points``,
        ``inner_losses`` (per point, one per inner fold), ``scores`` (their means), ``errors``
        (per point, why training failed, or None), ``same_as`` (per point, the earlier point whose
        training it repeats for this aggregator and whose losses it takes, or None), ``chosen_index``, ``chosen``,
        ``inner_folds`` and ``inner_sizes`` (fit, val, test patients per inner fold).

    Raises
    ------
    WSIPipelineError
        Without a grid, when the training patients cannot be split into inner folds, or when
        every grid point failed to train (the first point's error).
    LeakageError
        If an outer test patient reached an inner fold (a bug; never expected).
    """
    points = model.grid_points()
    if not points:
        raise WSIPipelineError("nested cross-validation needs model.grid", where="model.grid", fix="give the settings to vary")
    task = default_task() if task is None else task
    base = TrainConfig.from_model(model) if config is None else config
    plans = inner_plans(plan, task, targets, inner_folds, val_fraction, seed)
    losses: list[list[float]] = []
    errors: list[str | None] = []
    same_as: list[int | None] = []
    trained: dict[str, int] = {}
    for index, point in enumerate(points):
        point_settings = point_config(base, model, aggregator, point)
        # A point that changes nothing for this aggregator (hidden_dim for one without it) is the
        # same training as an earlier point: its scores are that point's, not trained again.
        key = repr((point_settings.lr, point_settings.weight_decay, point_settings.max_instances, point_settings.params_for(aggregator)))
        same_as.append(trained.get(key))
        if same_as[-1] is not None:
            losses.append(list(losses[same_as[-1]]))
            errors.append(errors[same_as[-1]])
            continue
        trained[key] = index
        try:
            losses.append([
                inner_loss(train_fold(inner, aggregator, bags, targets, point_settings, seed, task=task, device=device,
                                      slide_names=slide_names, predict_validation=False), targets)
                for inner in plans
            ])
            errors.append(None)
        except WSIPipelineError as error:  # a diverging lr fails its point, not the fold
            losses.append([math.inf] * len(plans))
            errors.append(error.format())
    scores = [float(np.mean(point_losses)) for point_losses in losses]
    if all(error is not None for error in errors):
        first = errors[0]
        raise WSIPipelineError(
            f"nested CV in {plan.title}: every grid point failed to train; the first: {first}",
            where="model.grid",
            fix="see the error above; a grid of smaller learning rates, or fixing the data, lets training run",
        )
    chosen = min(range(len(points)), key=lambda i: (scores[i], i))  # ties: the first in grid order
    rows = train_fold(plan, aggregator, bags, targets, point_config(base, model, aggregator, points[chosen]), seed,
                      task=task, device=device, slide_names=slide_names)
    rows.attrs["history"]["grid_search"] = {
        "points": points,
        "inner_losses": losses,
        "scores": scores,
        "errors": errors,
        "same_as": same_as,
        "chosen_index": chosen,
        "chosen": points[chosen],
        "inner_folds": inner_folds,
        "inner_sizes": [[len(p.fit_ids), len(p.val_ids), len(p.test_ids)] for p in plans],
    }
    return rows
