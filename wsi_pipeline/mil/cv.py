"""Cross-validation: out-of-fold predictions, one fold (the engine's unit of work) at a time.

:func:`train_fold` is a pure function of its arguments, so the engine can run one task per
(fold, aggregator) in any order or place. :func:`cross_validate` is the sequential
convenience for notebooks and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.bags import binary_label, check_bags
from wsi_pipeline.mil.registry import get_aggregator_spec
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, assert_disjoint, plan_folds
from wsi_pipeline.mil.train import TrainConfig, fit_aggregator, predict_bags

PREDICTION_COLUMNS = ("patient_id", "model", "fold", "label", "score")


def train_fold(
    plan: FoldPlan,
    aggregator: str,
    bags: Mapping[str, np.ndarray],
    labels: Mapping[str, int],
    config: TrainConfig,
    seed: int,
    *,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Train one aggregator on one fold and predict the fold's test patients.

    Parameters
    ----------
    plan
        The fold: fit on ``plan.fit_ids``, early-stop/select on ``plan.val_ids``, predict
        ``plan.test_ids``.
    aggregator
        A registered aggregator name.
    bags
        Patient id -> instance features (N, D).
    labels
        Patient id -> 0/1.
    config
        Training settings.
    seed
        Training seed (the same seed for every fold is fine: folds differ in their data).
    device
        Where to train and predict: ``"cpu"`` by default, ``"auto"`` (CUDA when this process
        has it), ``"cuda"`` or ``"cuda:N"``; predictions come back as CPU numpy either way.

    Returns
    -------
    pd.DataFrame
        One row per test patient with columns ``patient_id, model, fold, label, score``
        (score: predicted probability of label 1). ``df.attrs["history"]`` holds the
        training history of :func:`fit_aggregator`.

    Raises
    ------
    LeakageError
        If a test patient is also a fit or validation patient.
    WSIPipelineError
        For an unknown aggregator, or missing/bad bags or labels.
    """
    # Checked here too, not only in plan_folds: the engine may build or load plans itself.
    assert_disjoint(plan.test_ids, set(plan.fit_ids) | set(plan.val_ids), f"fold {plan.fold} test vs fit+val")
    if not plan.test_ids:
        raise LeakageError(f"fold {plan.fold} has no test patients")
    check_bags(bags, plan.test_ids)
    model, history = fit_aggregator(aggregator, bags, labels, plan.fit_ids, plan.val_ids, config, seed, device=device)
    scores = predict_bags(model, bags, plan.test_ids)
    frame = pd.DataFrame(
        {
            "patient_id": list(plan.test_ids),
            "model": aggregator,
            "fold": plan.fold,
            "label": [binary_label(labels, pid) for pid in plan.test_ids],
            "score": scores,
        },
        columns=list(PREDICTION_COLUMNS),
    )
    frame.attrs["history"] = history
    return frame


def cross_validate(
    bags: Mapping[str, np.ndarray],
    labels: Mapping[str, int],
    aggregators: Sequence[str],
    *,
    n_folds: int = 5,
    val_fraction: float = 0.2,
    config: TrainConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Out-of-fold predictions for every labelled patient and every aggregator.

    Every aggregator sees the same fold plan, so their scores are paired by patient.

    Parameters
    ----------
    bags
        Patient id -> instance features (N, D). Bags without a label are ignored.
    labels
        Patient id -> 0/1; these are the patients cross-validated, in this order.
    aggregators
        Registered aggregator names, e.g. ``["abmil", "clam-sb"]``; each is built with
        ``config.params_for(name)``.
    n_folds, val_fraction, seed
        As in :func:`~wsi_pipeline.mil.splits.plan_folds`; ``seed`` also seeds training.
    config
        Training settings; those of a default workflow's ``model`` section when omitted.
    device
        Where to train and predict: ``"cpu"`` by default, ``"auto"`` (CUDA when this process
        has it), ``"cuda"`` or ``"cuda:N"``; predictions come back as CPU numpy either way.

    Returns
    -------
    pd.DataFrame
        Columns ``patient_id, model, fold, label, score``; one row per (patient, aggregator),
        ordered by aggregator, then fold. ``df.attrs["histories"]`` maps
        ``(aggregator, fold)`` to the training history.
    """
    config = TrainConfig.from_model(ModelConfig()) if config is None else config
    aggregators = list(aggregators)
    if not aggregators:
        raise WSIPipelineError("no aggregators to cross-validate", where="model", fix="name at least one aggregator, e.g. abmil")
    for name in aggregators:  # fail before any training, not after the first model
        get_aggregator_spec(name)
    ids = list(labels)
    check_bags(bags, ids)
    y = [binary_label(labels, pid) for pid in ids]
    plans = plan_folds(ids, y, n_folds=n_folds, val_fraction=val_fraction, seed=seed)

    frames, histories = [], {}
    for name in aggregators:
        for plan in plans:
            frame = train_fold(plan, name, bags, labels, config, seed, device=device)
            histories[(name, plan.fold)] = frame.attrs.pop("history")
            frames.append(frame)
    result = pd.concat(frames, ignore_index=True)
    counts = result.groupby("model")["patient_id"].agg(["size", "nunique"])
    if not ((counts["size"] == len(ids)) & (counts["nunique"] == len(ids))).all():
        raise LeakageError("out-of-fold predictions do not cover every patient exactly once per aggregator")
    result.attrs["histories"] = histories
    return result
