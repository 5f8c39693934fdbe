"""The Zarr feature store: layout, keys, provenance, atomic completion."""

from wsi_pipeline.store.feature_store import (
    FeatureEntry,
    FeatureStore,
    FeatureWriter,
    TilingEntry,
    features_key,
    tiling_key,
)
from wsi_pipeline.store.keys import short_hash

__all__ = [
    "FeatureEntry",
    "FeatureStore",
    "FeatureWriter",
    "TilingEntry",
    "features_key",
    "short_hash",
    "tiling_key",
]
