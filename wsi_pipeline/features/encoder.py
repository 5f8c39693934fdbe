"""A ready-to-run encoder: network on its device, preprocessing, and its store id."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsi_pipeline.features.registry import EncoderSpec, get_encoder_spec
from wsi_pipeline.features.weights import resolve_weights, state_dict_sha256
from wsi_pipeline.store.keys import file_sha256


def pick_device(requested: str) -> torch.device:
    """Return the torch device for ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class LoadedEncoder:
    """An encoder with weights loaded, ready to embed batches of RGB tiles."""

    spec: EncoderSpec
    model: nn.Module
    device: torch.device
    weights_path: str | None
    weights_sha256: str

    @property
    def encoder_id(self) -> str:
        """Store key: encoder name + a hash of its weights, so new weights never mix with old."""
        return format_encoder_id(self.spec.name, self.weights_sha256)

    def provenance(self) -> dict[str, object]:
        """Attributes recorded with every feature entry."""
        return {
            "encoder": self.spec.name,
            "encoder_id": self.encoder_id,
            "encoder_is_demo": self.spec.is_demo,
            "encoder_description": self.spec.description,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.spec.preprocessing(),
            "dim": self.spec.dim,
        }

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 → normalised (B, 3, input_px, input_px) float tensor on the device."""
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        size = self.spec.input_px
        if batch.shape[-2:] != (size, size):
            batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        return (batch - mean) / std

    @torch.inference_mode()
    def embed(self, tiles: np.ndarray) -> np.ndarray:
        """Embed a batch of RGB tiles; returns (B, dim) float32."""
        features = self.model(self.preprocess(tiles))
        return features.float().cpu().numpy()


def format_encoder_id(name: str, weights_sha256: str) -> str:
    """The store key of an encoder: its name and the start of its weights' SHA-256."""
    return f"{name}-{weights_sha256[:12]}"


def encoder_id_for(name: str, weights: str | Path | None = None) -> str:
    """Return an encoder's store key without building it when its weights are a file.

    A ViT-L checkpoint is only hashed here, not loaded: the client needs the key to find
    entries in the store, while the workers are the ones that run the model.

    Raises
    ------
    WSIPipelineError
        When the weights cannot be found (never downloaded).
    """
    spec = get_encoder_spec(name)
    if spec.weights_file is None:
        return load_encoder(name, weights, "cpu").encoder_id
    path = resolve_weights(spec.name, spec.weights_file, spec.hf_repo, weights)
    return format_encoder_id(spec.name, file_sha256(str(path)))


def load_encoder(name: str, weights: str | Path | None = None, device: str = "auto") -> LoadedEncoder:
    """Build an encoder from the registry with its weights (offline) on a device.

    Parameters
    ----------
    name
        Registry name (``features.encoder``).
    weights
        Explicit checkpoint path; default: the encoder's documented local locations.
    device
        ``'auto'`` (GPU when present), ``'cpu'``, ``'cuda'``...

    Returns
    -------
    LoadedEncoder
        In eval mode. Cached per process, so per-slide tasks on a worker share one copy.
    """
    # One build at a time per process: the threads of a Dask worker would otherwise build the
    # same encoder at once, loading a checkpoint once per thread and racing on torch's global
    # random state (a seeded random-weight encoder then gets the wrong weights).
    with _BUILD_LOCK:
        return _load_encoder_cached(name, None if weights is None else str(weights), device)


_BUILD_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load_encoder_cached(name: str, weights: str | None, device: str) -> LoadedEncoder:
    spec = get_encoder_spec(name)
    if spec.weights_file is None:
        path = None
        model = spec.build(None)
        sha = state_dict_sha256(model)
    else:
        path = resolve_weights(spec.name, spec.weights_file, spec.hf_repo, weights)
        sha = file_sha256(str(path))
        model = spec.build(path)
    torch_device = pick_device(device)
    model = model.to(torch_device).eval()
    return LoadedEncoder(spec, model, torch_device, None if path is None else str(path), sha)
