"""Attention-MIL: bag aggregators, patient-level fold plans, training with inner validation, inference.

The public names below are what the engine uses; each lives in a module with one idea:
``models`` (aggregators), ``registry`` (names and defaults), ``bags`` (bag checks),
``cohort_bags`` (which patients have bags in the store; loading a fold's), ``splits`` (fold
plans), ``folds`` (a run's plan and ``folds.csv``), ``train`` (one fit), ``cv`` (out-of-fold
predictions), ``predictions`` (the run's ``predictions.csv``).
"""

from wsi_pipeline.mil.cohort_bags import (
    AvailableBags,
    BagSource,
    available_bags,
    load_bags,
    slide_entries,
)
from wsi_pipeline.mil.cv import PREDICTION_COLUMNS, cross_validate, train_fold
from wsi_pipeline.mil.folds import FOLDS_FILE, folds_frame, plan_run_folds, write_folds
from wsi_pipeline.mil.models import GatedABMIL, MeanPoolMLP
from wsi_pipeline.mil.predictions import (
    PREDICTIONS_FILE,
    assemble_predictions,
    write_predictions,
)
from wsi_pipeline.mil.registry import (
    AGGREGATORS,
    AggregatorSpec,
    available_aggregators,
    build_aggregator,
    get_aggregator_spec,
    register_aggregator,
)
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, assert_disjoint, plan_folds
from wsi_pipeline.mil.train import (
    TrainConfig,
    attention_weights,
    bag_logits,
    fit_aggregator,
    predict_bags,
)

__all__ = [
    "AGGREGATORS",
    "FOLDS_FILE",
    "PREDICTIONS_FILE",
    "PREDICTION_COLUMNS",
    "AggregatorSpec",
    "AvailableBags",
    "BagSource",
    "FoldPlan",
    "GatedABMIL",
    "LeakageError",
    "MeanPoolMLP",
    "TrainConfig",
    "assemble_predictions",
    "assert_disjoint",
    "attention_weights",
    "available_aggregators",
    "available_bags",
    "bag_logits",
    "build_aggregator",
    "cross_validate",
    "fit_aggregator",
    "folds_frame",
    "get_aggregator_spec",
    "load_bags",
    "plan_folds",
    "plan_run_folds",
    "predict_bags",
    "register_aggregator",
    "slide_entries",
    "train_fold",
    "write_folds",
    "write_predictions",
]
