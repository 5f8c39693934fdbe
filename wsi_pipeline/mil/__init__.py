"""Attention-MIL: bag aggregators, patient-level fold plans, training with inner validation, inference.

The public names below are what the engine uses; each lives in a module with one idea:
``aggregators`` (the models, one module each, behind one interface), ``registry`` (names,
settings and defaults), ``bags`` (bag checks), ``cohort_bags`` (which patients have bags in
the store; loading a fold's), ``splits`` (repeated fold plans), ``folds`` (a run's plan and
``folds.csv``), ``tasks`` (what is predicted: outputs, loss, predictions, metrics),
``targets`` (patients' targets by id), ``train`` (one fit), ``cv`` (out-of-fold predictions),
``nested`` (nested CV over ``model.grid``), ``checkpoint`` (a fold's ``model.pt``/``history.json``,
:func:`load_fold_model`), ``training_record`` (``training.csv``), ``predictions`` (the run's
``predictions.csv``).

Names are imported on first use: the config models check aggregator names and settings
against ``registry`` when a workflow is loaded, and that must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_pipeline.lazy_exports import lazy_exports

_EXPORTS = {
    "AvailableBags": "cohort_bags",
    "BagSource": "cohort_bags",
    "StoreBagSource": "cohort_bags",
    "InstanceTableBags": "external_bags",
    "H5Bags": "external_bags",
    "available_bags": "cohort_bags",
    "load_bags": "cohort_bags",
    "slide_entries": "cohort_bags",
    "FoldModelInfo": "checkpoint",
    "load_fold_model": "checkpoint",
    "ID_COLUMNS": "cv",
    "prediction_columns": "cv",
    "cross_validate": "cv",
    "train_fold": "cv",
    "FOLDS_FILE": "folds",
    "folds_frame": "folds",
    "plan_run_folds": "folds",
    "write_folds": "folds",
    "Aggregator": "aggregators",
    "pad_bags": "aggregators",
    "PREDICTIONS_FILE": "predictions",
    "assemble_predictions": "predictions",
    "write_predictions": "predictions",
    "AGGREGATORS": "registry",
    "AggregatorSpec": "registry",
    "Param": "registry",
    "available_aggregators": "registry",
    "build_aggregator": "registry",
    "get_aggregator_spec": "registry",
    "register_aggregator": "registry",
    "resolve_params": "registry",
    "nested_train_fold": "nested",
    "TRAINING_FILE": "training_record",
    "FoldPlan": "splits",
    "LeakageError": "splits",
    "assert_disjoint": "splits",
    "plan_folds": "splits",
    "TrainConfig": "train",
    "attention_weights": "train",
    "bag_outputs": "train",
    "fit_aggregator": "train",
    "predict_bags": "train",
}

__all__ = [
    "AGGREGATORS",
    "FOLDS_FILE",
    "ID_COLUMNS",
    "PREDICTIONS_FILE",
    "TRAINING_FILE",
    "Aggregator",
    "AggregatorSpec",
    "AvailableBags",
    "BagSource",
    "FoldModelInfo",
    "FoldPlan",
    "H5Bags",
    "InstanceTableBags",
    "LeakageError",
    "Param",
    "StoreBagSource",
    "TrainConfig",
    "assemble_predictions",
    "assert_disjoint",
    "attention_weights",
    "available_aggregators",
    "available_bags",
    "bag_outputs",
    "build_aggregator",
    "cross_validate",
    "fit_aggregator",
    "folds_frame",
    "get_aggregator_spec",
    "load_bags",
    "load_fold_model",
    "nested_train_fold",
    "pad_bags",
    "plan_folds",
    "plan_run_folds",
    "predict_bags",
    "prediction_columns",
    "register_aggregator",
    "resolve_params",
    "slide_entries",
    "train_fold",
    "write_folds",
    "write_predictions",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from wsi_pipeline.mil.aggregators import Aggregator, pad_bags
    from wsi_pipeline.mil.checkpoint import FoldModelInfo, load_fold_model
    from wsi_pipeline.mil.cohort_bags import (
        AvailableBags,
        BagSource,
        StoreBagSource,
        available_bags,
        load_bags,
        slide_entries,
    )
    from wsi_pipeline.mil.cv import (
        ID_COLUMNS,
        cross_validate,
        prediction_columns,
        train_fold,
    )
    from wsi_pipeline.mil.external_bags import H5Bags, InstanceTableBags
    from wsi_pipeline.mil.folds import (
        FOLDS_FILE,
        folds_frame,
        plan_run_folds,
        write_folds,
    )
    from wsi_pipeline.mil.nested import nested_train_fold
    from wsi_pipeline.mil.predictions import (
        PREDICTIONS_FILE,
        assemble_predictions,
        write_predictions,
    )
    from wsi_pipeline.mil.registry import (
        AGGREGATORS,
        AggregatorSpec,
        Param,
        available_aggregators,
        build_aggregator,
        get_aggregator_spec,
        register_aggregator,
        resolve_params,
    )
    from wsi_pipeline.mil.splits import (
        FoldPlan,
        LeakageError,
        assert_disjoint,
        plan_folds,
    )
    from wsi_pipeline.mil.train import (
        TrainConfig,
        attention_weights,
        bag_outputs,
        fit_aggregator,
        predict_bags,
    )
    from wsi_pipeline.mil.training_record import TRAINING_FILE


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
