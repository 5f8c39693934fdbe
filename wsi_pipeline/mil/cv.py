"""Cross-validation: out-of-fold predictions, one fold (the engine's unit of work) at a time.

:func:`train_fold` is a pure function of its arguments, so the engine can run one task per
(repeat, fold, aggregator) in any order or place. :func:`cross_validate` is the sequential
convenience for notebooks and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from wsi_pipeline.config.workflow import ModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.bags import check_bags
from wsi_pipeline.mil.fusion import (
    mean_over_slides,
    patient_of,
    slide_bags,
    slide_ids,
    slides_of,
)
from wsi_pipeline.mil.registry import get_aggregator_spec
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, assert_disjoint, plan_folds
from wsi_pipeline.mil.standardise import standardised
from wsi_pipeline.mil.targets import encode_targets, target_frame
from wsi_pipeline.mil.tasks.base import Task
from wsi_pipeline.mil.train import (
    TrainConfig,
    default_task,
    fit_aggregator,
    predict_bags,
)

#: The columns every prediction row starts with; the task's target and prediction columns follow.
ID_COLUMNS = ("patient_id", "model", "repeat", "fold")
#: The column naming a row's slide when predictions are per slide (``model.bags: slide``).
SLIDE_COLUMN = "slide_id"


class SharedRecord(dict):
    """A fold's training history in a frame's ``attrs``: shared, never deep-copied.

    pandas deep-copies ``attrs`` into every frame or column derived from one; this record
    holds the model and the fold's bags (a whole cohort in memory, or a streamed source with
    reader threads), which must be neither copied on each column access nor pickled.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedRecord:
        return self


def prediction_columns(task: Task, by_slide: bool = False) -> tuple[str, ...]:
    """The columns of a prediction row for ``task``, in order.

    ``patient_id, model, repeat, fold``, the task's target columns (as the cohort names them)
    and its prediction columns: for a binary task ``label, score``. ``by_slide`` (slide-level
    rows) puts ``slide_id`` after ``patient_id``.
    """
    ids = (ID_COLUMNS[0], SLIDE_COLUMN, *ID_COLUMNS[1:]) if by_slide else ID_COLUMNS
    return (*ids, *task.target_columns, *task.prediction_columns)


def train_fold(
    plan: FoldPlan,
    aggregator: str,
    bags: Mapping[str, np.ndarray],
    targets: Mapping[str, Any],
    config: TrainConfig,
    seed: int,
    *,
    task: Task | None = None,
    device: str | torch.device = "cpu",
    slide_names: Mapping[str, Sequence[str]] | None = None,
    predict_validation: bool = True,
) -> pd.DataFrame:
    """Train one aggregator on one fold and predict the fold's test patients (or their slides).

    Parameters
    ----------
    plan
        The fold: fit on ``plan.fit_ids``, early-stop/select on ``plan.val_ids``, predict
        ``plan.test_ids``.
    aggregator
        A registered aggregator name.
    bags
        Patient id -> instance features (N, D); with ``config.bags`` ``'patient-late'`` or
        ``'slide'``, patient id -> the list of the patient's slide bags (a single array is one slide).
    targets
        Patient id -> raw target values (:func:`~wsi_pipeline.mil.targets.patient_targets`).
    config
        Training settings; ``config.bags`` says what a bag and a prediction row are
        (:mod:`~wsi_pipeline.mil.fusion`).
    seed
        Training seed (the same seed for every fold is fine: folds differ in their data).
    task
        The task, bound to the cohort, not fitted (each fold fits it on its fit patients);
        default: binary on 0/1 labels.
    device
        Where to train and predict: ``"cpu"`` by default, ``"auto"`` (CUDA when this process
        has it), ``"cuda"`` or ``"cuda:N"``; predictions come back as CPU numpy either way.
    slide_names
        Patient id -> the names of the patient's slides, in the order of their bags
        (:meth:`~wsi_pipeline.mil.cohort_bags.BagSource.slide_names`); the ``slide_id`` of
        slide-level rows. Default: a slide's position among its patient's slides.
    predict_validation
        Also predict the validation patients with the kept model (``history["validation_predictions"]``,
        what a run's decision threshold may be chosen on); nested CV's inner folds need not.

    Returns
    -------
    pd.DataFrame
        One row per test patient with the columns of :func:`prediction_columns` (binary:
        ``patient_id, model, repeat, fold, label, score``; score: predicted probability of
        label 1); with ``config.bags == 'slide'`` one row per test slide, ``slide_id`` beside
        ``patient_id``, the target its patient's. ``df.attrs["history"]`` holds the training
        history of :func:`fit_aggregator`.

    Raises
    ------
    LeakageError
        If a test patient is also a fit or validation patient.
    WSIPipelineError
        For an unknown aggregator, or missing/bad bags or targets.
    """
    task = default_task() if task is None else task
    # Checked here too, not only in plan_folds: the engine may build or load plans itself.
    assert_disjoint(plan.test_ids, set(plan.fit_ids) | set(plan.val_ids), f"{plan.title} test vs fit+val")
    if not plan.test_ids:
        raise LeakageError(f"{plan.title} has no test patients")
    fit_ids, val_ids, test_ids, bag_targets = plan.fit_ids, plan.val_ids, plan.test_ids, targets
    by_slide = config.bags == "slide"
    data_key = getattr(bags, "data_key", None)  # the bag cache's mappings name their data; kept across the slide view
    if config.bags != "patient-early":  # each slide a bag with its patient's target; the splits stay the patients'
        bags = slide_bags(bags)
        fit_ids, val_ids, test_ids = (slides_of(bags, ids) for ids in (plan.fit_ids, plan.val_ids, plan.test_ids))
        bag_targets = {key: targets[patient_of(key)] for key in (*fit_ids, *val_ids) if patient_of(key) in targets}
        missing = [pid for pid in plan.test_ids if not slides_of(bags, [pid])]
        if missing:
            check_bags({}, missing)  # names the first patient without a bag
    check_bags(bags, test_ids)
    if config.standardise:  # statistics of the fit patients' instances only, applied to every bag of the fold
        check_bags(bags, fit_ids)
        bags = standardised(bags, fit_ids, data_key=data_key)
    model, history = fit_aggregator(aggregator, bags, bag_targets, fit_ids, val_ids, config, seed, task=task, device=device)
    fitted: Task = history["task"]

    def rows(keys: Sequence[str], patients: Sequence[str]) -> pd.DataFrame:
        """Prediction rows of ``keys``' bags (``patients``' in patient modes); a slide row carries its patient's target."""
        predicted = predict_bags(model, bags, keys, fitted)
        if config.bags == "patient-late":
            predicted = mean_over_slides(predicted, keys, patients, fitted)
        row_patients = [patient_of(key) for key in keys] if by_slide else list(patients)
        return pd.DataFrame(
            {
                "patient_id": row_patients,
                **({SLIDE_COLUMN: slide_ids(keys, slide_names)} if by_slide else {}),
                "model": aggregator,
                "repeat": plan.repeat,
                "fold": plan.fold,
                **fitted.decode_targets(encode_targets(task, targets, row_patients)),
                **predicted,
            },
            columns=list(prediction_columns(fitted, by_slide)),
        )

    frame = rows(test_ids, plan.test_ids)
    # The inner validation patients, predicted by the kept model: what a decision threshold may
    # be chosen on without looking at any test patient (scoring.threshold_method).
    if predict_validation:
        history["validation_predictions"] = rows(val_ids, plan.val_ids).to_dict(orient="records")
    # What the fold's checkpoint and nested CV's inner scores need (mil.checkpoint, mil.nested):
    # the model, the fold's bags as the model saw them (a view, standardised on read: no copy),
    # the test bags' keys in them, and the feature statistics standardisation used.
    history.update(model=model, fold_bags=bags, test_keys=tuple(test_ids), feature_stats=getattr(bags, "stats", None))
    frame.attrs["history"] = SharedRecord(history)
    return frame


def cross_validate(
    bags: Mapping[str, np.ndarray],
    targets: Mapping[str, Any],
    aggregators: Sequence[str],
    *,
    n_folds: int = 5,
    val_fraction: float = 0.2,
    n_repeats: int = 1,
    config: TrainConfig | None = None,
    seed: int = 0,
    task: Task | None = None,
    device: str | torch.device = "cpu",
    slide_names: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Out-of-fold predictions for every patient with a target, every aggregator and every repeat.

    Every aggregator sees the same fold plan, so their predictions are paired by patient.

    Parameters
    ----------
    bags
        Patient id -> instance features (N, D), or the list of the patient's slide bags
        (``config.bags`` other than ``'patient-early'``). Bags without a target are ignored.
    targets
        Patient id -> raw target values (0/1 labels for the default binary task); these are
        the patients cross-validated, in this order.
    aggregators
        Registered aggregator names, e.g. ``["abmil", "clam-sb"]``; each is built with
        ``config.params_for(name)``.
    n_folds, val_fraction, n_repeats, seed
        As in :func:`~wsi_pipeline.mil.splits.plan_folds` (stratified on the task's strata);
        ``seed`` also seeds training.
    config
        Training settings; those of a default workflow's ``model`` section when omitted.
    task
        The task, not fitted; a multiclass task without classes is bound to ``targets`` here.
        Default: binary.
    device
        Where to train and predict: ``"cpu"`` by default, ``"auto"`` (CUDA when this process
        has it), ``"cuda"`` or ``"cuda:N"``; predictions come back as CPU numpy either way.
    slide_names
        As for :func:`train_fold` (slide-level rows only).

    Returns
    -------
    pd.DataFrame
        The columns of :func:`prediction_columns`; one row per (patient, aggregator, repeat)
        (per (slide, aggregator, repeat) with ``config.bags == 'slide'``), ordered by
        aggregator, then repeat and fold. ``df.attrs["histories"]`` maps
        ``(aggregator, fold)`` (one repeat) or ``(aggregator, repeat, fold)`` to the training history.
    """
    config = TrainConfig.from_model(ModelConfig()) if config is None else config
    task = default_task() if task is None else task
    aggregators = list(aggregators)
    if not aggregators:
        raise WSIPipelineError("no aggregators to cross-validate", where="model", fix="name at least one aggregator, e.g. abmil")
    for name in aggregators:  # fail before any training, not after the first model
        get_aggregator_spec(name)
    ids = list(targets)
    if config.bags == "patient-early":
        check_bags(bags, ids)
    else:  # a patient's bags are their slides': every patient needs one, every slide must be usable
        slides = slide_bags({pid: bags[pid] for pid in ids if pid in bags})
        without = [pid for pid in ids if not slides_of(slides, [pid])]
        if without:
            check_bags({}, without)  # names the first patient without a bag
        check_bags(slides, list(slides))
    task = task.bind(target_frame(task, targets, ids))
    strata = task.stratify_labels(encode_targets(task, targets, ids))
    plans = plan_folds(ids, strata, n_folds=n_folds, val_fraction=val_fraction, seed=seed, n_repeats=n_repeats)

    frames, histories = [], {}
    for name in aggregators:
        for plan in plans:
            frame = train_fold(plan, name, bags, targets, config, seed, task=task, device=device, slide_names=slide_names)
            key = (name, plan.fold) if n_repeats == 1 else (name, plan.repeat, plan.fold)
            histories[key] = frame.attrs.pop("history")
            frames.append(frame)
    result = pd.concat(frames, ignore_index=True)
    # A row is a patient's, or a slide's: each must appear once, and every patient somewhere.
    unit = ["patient_id", SLIDE_COLUMN] if SLIDE_COLUMN in result.columns else ["patient_id"]
    runs = result.groupby(["model", "repeat"])
    covered = len(runs) == len(aggregators) * n_repeats and all(
        set(group["patient_id"]) == set(ids) and not group.duplicated(unit).any() for _, group in runs
    )
    if not covered:
        raise LeakageError("out-of-fold predictions do not cover every patient exactly once per aggregator and repeat")
    result.attrs["histories"] = histories
    return result
