"""Encoder registry, offline weights, the tile loader and batched inference into the store."""

from wsi_pipeline.features import encoders as _builtin_encoders  # noqa: F401 - registers the built-in entries
from wsi_pipeline.features.encoder import LoadedEncoder, load_encoder, pick_device
from wsi_pipeline.features.extract import extract_slide_features
from wsi_pipeline.features.registry import (
    ENCODERS,
    EncoderSpec,
    get_encoder_spec,
    register_encoder,
)

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "LoadedEncoder",
    "extract_slide_features",
    "get_encoder_spec",
    "load_encoder",
    "pick_device",
    "register_encoder",
]
