"""The encoder registry: one place that knows every tile encoder and its defaults.

An entry says how to build the network, where its weights come from, how tiles must be
preprocessed, what it outputs, and at which resolution it was trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from wsi_pipeline.errors import WSIPipelineError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the pipeline must know about one tile encoder.

    Attributes
    ----------
    name
        Registry name, used in workflow presets (``features.encoder``).
    build
        Creates the network with its weights loaded: ``build(weights_path)``; ``weights_path``
        is ``None`` for encoders that need no file.
    dim
        Length of the embedding of one tile.
    input_px
        Side of the square image the network takes; tiles are resized to it.
    mean, std
        Per-channel normalisation applied to [0, 1] RGB.
    recommended_mpp, recommended_tile_px
        The resolution and tile size the encoder was trained at.
    weights_file
        File name of the checkpoint (``None``: no file needed).
    hf_repo
        Hugging Face repository whose local cache may hold ``weights_file``; never downloaded.
    is_demo
        True for encoders with no pathology training; every output names them as demos.
    description
        One line for listings and reports.
    """

    name: str
    build: Callable[[Path | None], nn.Module]
    dim: int
    input_px: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    recommended_mpp: float = 0.5
    recommended_tile_px: int = 256
    weights_file: str | None = None
    hf_repo: str | None = None
    is_demo: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def preprocessing(self) -> dict[str, Any]:
        """Describe the preprocessing, for provenance in the store."""
        return {"resize_to": self.input_px, "interpolation": "bilinear+antialias", "mean": list(self.mean), "std": list(self.std)}


ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder to the registry (a name may be registered once)."""
    if spec.name in ENCODERS:
        raise ValueError(f"encoder '{spec.name}' is already registered")
    ENCODERS[spec.name] = spec
    return spec


def get_encoder_spec(name: str) -> EncoderSpec:
    """Return the registered encoder ``name``, with an error listing the known ones."""
    # The built-in encoders register themselves on import.
    from wsi_pipeline.features import encoders  # noqa: F401

    try:
        return ENCODERS[name]
    except KeyError:
        raise WSIPipelineError(
            f"unknown encoder '{name}'",
            where="field 'features.encoder'",
            fix=f"use one of: {', '.join(sorted(ENCODERS))}",
        ) from None
