"""Attention-MIL: bag aggregators, patient-level fold plans, training with inner validation, inference.

The public names below are what the engine uses; each lives in a module with one idea:
``models`` (aggregators), ``registry`` (names and defaults), ``bags`` (bag checks),
``splits`` (fold plans), ``train`` (one fit), ``cv`` (out-of-fold predictions).
"""

from wsi_pipeline.mil.cv import PREDICTION_COLUMNS, cross_validate, train_fold
from wsi_pipeline.mil.models import GatedABMIL, MeanPoolMLP
from wsi_pipeline.mil.registry import (
    AGGREGATORS,
    AggregatorSpec,
    available_aggregators,
    build_aggregator,
    get_aggregator_spec,
    register_aggregator,
)
from wsi_pipeline.mil.splits import FoldPlan, LeakageError, assert_disjoint, plan_folds
from wsi_pipeline.mil.train import TrainConfig, attention_weights, bag_logits, fit_aggregator, predict_bags

__all__ = [
    "AGGREGATORS",
    "PREDICTION_COLUMNS",
    "AggregatorSpec",
    "FoldPlan",
    "GatedABMIL",
    "LeakageError",
    "MeanPoolMLP",
    "TrainConfig",
    "assert_disjoint",
    "attention_weights",
    "available_aggregators",
    "bag_logits",
    "build_aggregator",
    "cross_validate",
    "fit_aggregator",
    "get_aggregator_spec",
    "plan_folds",
    "predict_bags",
    "register_aggregator",
    "train_fold",
]
