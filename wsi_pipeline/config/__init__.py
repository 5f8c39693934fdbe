"""Pydantic models of run manifests and workflow presets; loading, merging, validation messages."""

from wsi_pipeline.config.loader import RunConfig, deep_merge, load_run_config
from wsi_pipeline.config.manifest import (
    ClusterConfig,
    CohortConfig,
    RunManifest,
    SyntheticCohortConfig,
)
from wsi_pipeline.config.workflow import (
    FeaturesConfig,
    ModelConfig,
    ScoringConfig,
    TaskConfig,
    TilingConfig,
    TissueConfig,
    ValidationConfig,
    WorkflowPreset,
    parse_mpp,
)

__all__ = [
    "ClusterConfig",
    "CohortConfig",
    "FeaturesConfig",
    "ModelConfig",
    "RunConfig",
    "RunManifest",
    "ScoringConfig",
    "SyntheticCohortConfig",
    "TaskConfig",
    "TilingConfig",
    "TissueConfig",
    "ValidationConfig",
    "WorkflowPreset",
    "deep_merge",
    "load_run_config",
    "parse_mpp",
]
