"""A ready-to-run encoder: network on its device, preprocessing, and its store id."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsi_pipeline.features.network import build_network
from wsi_pipeline.features.preprocessing import Preprocessing
from wsi_pipeline.features.registry import EncoderSpec, encoder_slug, get_encoder_spec
from wsi_pipeline.features.stain_step import StainSettings, StainStep
from wsi_pipeline.features.weights import resolve_weights, state_dict_sha256
from wsi_pipeline.store.keys import file_sha256, short_hash


def pick_device(requested: str) -> torch.device:
    """Return the torch device for ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


#: Autocast dtypes by ``features.precision``; ``auto`` is bfloat16 on CUDA (about twice the
#: float32 throughput of a ViT on tensor cores, with float32's exponent range) and float32 on the CPU.
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Largest batch ``batch_size: auto`` picks, and the share of free GPU memory it may fill.
MAX_AUTO_BATCH = 1024
AUTO_BATCH_MEMORY_SHARE = 0.7
#: ``batch_size: auto`` on the CPU, where a larger batch gains nothing.
CPU_AUTO_BATCH = 64


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain float32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; use one of: auto, {', '.join(PRECISIONS)}") from None


def is_convolutional(model: nn.Module) -> bool:
    """Whether a network is a CNN (several convolutions) rather than a ViT (one patch embedding)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


@dataclass
class LoadedEncoder:
    """An encoder with weights loaded, ready to embed batches of RGB tiles.

    Tiles travel to the device as uint8 (a quarter of float32's bytes) and are resized and
    normalised there; the forward pass runs under autocast at :attr:`autocast_dtype`, in
    channels-last memory format for CNNs on CUDA (what cuDNN's tensor-core kernels want).
    """

    spec: EncoderSpec
    model: nn.Module
    device: torch.device
    weights_path: str | None
    weights_sha256: str
    preprocessing: Preprocessing
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compiled: bool = False

    @property
    def encoder_id(self) -> str:
        """Store key: the encoder's name and a hash of its weights, preprocessing and output rule.

        New weights, another resize or normalisation, or stain normalisation each give a new key,
        so features made differently never mix.
        """
        return format_encoder_id(self.spec, self.weights_sha256, self.preprocessing.describe())

    @property
    def precision(self) -> str:
        """The forward pass's dtype, for provenance."""
        return "float32" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")

    def provenance(self) -> dict[str, object]:
        """Attributes recorded with every feature entry."""
        return {
            "encoder": self.spec.name,
            "encoder_id": self.encoder_id,
            "encoder_is_demo": self.spec.is_demo,
            "encoder_description": self.spec.description,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing.describe(),
            "output": self.spec.output,
            "architecture": self.spec.architecture,
            "dim": self.spec.dim,
            "device": str(self.device),
            "precision": self.precision,
            "compiled": self.compiled,
        }

    def preprocess(self, tiles: np.ndarray | torch.Tensor, stain_source: object = None) -> torch.Tensor:
        """(B, H, W, 3) uint8 → the network's normalised (B, 3, S, S) float input on the device.

        ``tiles`` may be a numpy array (pinned memory is copied asynchronously) or a tensor
        already on the device (tiles decoded on the GPU). Tiles travel as uint8, a quarter of
        float32's bytes; every preprocessing step runs on the device.
        """
        if isinstance(tiles, np.ndarray):
            tiles = torch.from_numpy(np.ascontiguousarray(tiles))
        batch = self.preprocessing(tiles.to(self.device, non_blocking=True), stain_source)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @torch.inference_mode()
    def embed(self, tiles: np.ndarray | torch.Tensor, stain_source: object = None) -> np.ndarray:
        """Embed a batch of RGB tiles; returns (B, dim) float32 on the CPU.

        ``stain_source``: the slide's fitted stains, with per-slide stain normalisation.
        """
        batch = self.preprocess(tiles, stain_source)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            features = self.model(batch)
        return features.float().cpu().numpy()

    def batch_size(self, requested: int | str) -> int:
        """The batch size to use: ``requested``, or for ``'auto'`` the largest that fits the GPU.

        On CUDA, one forward pass of 16 tiles measures the memory a tile needs; the batch is the
        largest power of two (at most :data:`MAX_AUTO_BATCH`) whose tiles fit in
        :data:`AUTO_BATCH_MEMORY_SHARE` of the free memory, halved while it does not fit. On the
        CPU, ``'auto'`` is :data:`CPU_AUTO_BATCH`.
        """
        if requested != "auto":
            return int(requested)
        if self.device.type != "cuda":
            return CPU_AUTO_BATCH
        return _auto_cuda_batch(self)


def _auto_cuda_batch(encoder: LoadedEncoder) -> int:
    size = encoder.preprocessing.input_px
    probe = 16
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(encoder.device)
    base = torch.cuda.memory_allocated(encoder.device)
    encoder.embed(torch.zeros((probe, size, size, 3), dtype=torch.uint8, device=encoder.device))
    per_tile = max(1, (torch.cuda.max_memory_allocated(encoder.device) - base) / probe)
    free, _ = torch.cuda.mem_get_info(encoder.device)
    fits = int(AUTO_BATCH_MEMORY_SHARE * free / per_tile)
    batch = MAX_AUTO_BATCH
    while batch > 1 and batch > fits:
        batch //= 2
    while batch > 1:
        try:
            encoder.embed(torch.zeros((batch, size, size, 3), dtype=torch.uint8, device=encoder.device))
            return batch
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    return 1


def format_encoder_id(spec: EncoderSpec, weights_sha256: str, preprocessing: dict) -> str:
    """The store key of an encoder: its name and 12 hex digits over its weights, preprocessing and output rule."""
    digest = short_hash({"weights_sha256": weights_sha256, "preprocessing": preprocessing, "output": spec.output}, length=12)
    return f"{encoder_slug(spec.name)}-{digest}"


def encoder_id_for(
    name: str, weights: str | Path | None = None, *, allow_download: bool = False, stain: StainSettings | None = None
) -> str:
    """Return an encoder's store key without building it when its weights are a file.

    A ViT-g checkpoint is only hashed here, not loaded: the client needs the key to find
    entries in the store, while the workers are the ones that run the model.

    Raises
    ------
    WSIPipelineError
        When the weights cannot be found (never downloaded unless ``allow_download``).
    """
    spec = get_encoder_spec(name)
    if not spec.needs_weights:
        return load_encoder(name, weights, "cpu", stain=stain).encoder_id
    path = resolve_weights(spec, weights, allow_download)
    return format_encoder_id(spec, file_sha256(str(path)), preprocessing_for(spec, stain).describe())


def preprocessing_for(spec: EncoderSpec, stain: StainSettings | None = None) -> Preprocessing:
    """An entry's preprocessing, from timm's resolution of its pretrained config, with optional
    stain normalisation first (its target fitted here, once)."""
    step = None if stain is None else StainStep.from_settings(stain)
    return Preprocessing.from_data_config(spec.data_config(), step)


def load_encoder(
    name: str,
    weights: str | Path | None = None,
    device: str = "auto",
    *,
    precision: str = "auto",
    compile: bool = False,
    allow_download: bool = False,
    stain: StainSettings | None = None,
) -> LoadedEncoder:
    """Build an encoder from the registry with its weights (offline) on a device.

    Parameters
    ----------
    name
        Registry name (``features.encoder``), or ``timm:<model>``.
    weights
        Explicit checkpoint path; default: the encoder's documented local locations.
    device
        ``'auto'`` (GPU when present), ``'cpu'``, ``'cuda'``...
    precision
        ``'auto'`` (bfloat16 on CUDA, float32 on the CPU), ``'float32'``, ``'bfloat16'``, ``'float16'``.
    compile
        Wrap the network in ``torch.compile`` (compiled on its first batch).
    allow_download
        Fetch missing weights from the Hugging Face hub (``features.allow_download``).
    stain
        Stain normalisation before the rest of the preprocessing (``features.stain_normalisation``).

    Returns
    -------
    LoadedEncoder
        In eval mode. Cached per process, so per-slide tasks on a worker share one copy.
    """
    # One build at a time per process: the threads of a Dask worker would otherwise build the
    # same encoder at once, loading a checkpoint once per thread and racing on torch's global
    # random state (a seeded random-weight encoder then gets the wrong weights).
    with _BUILD_LOCK:
        return _load_encoder_cached(name, None if weights is None else str(weights), device, precision, compile, allow_download, stain)


_BUILD_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load_encoder_cached(
    name: str, weights: str | None, device: str, precision: str, compile: bool, allow_download: bool, stain: StainSettings | None
) -> LoadedEncoder:
    spec = get_encoder_spec(name)
    if not spec.needs_weights:
        path = None
        model = build_network(spec, None)
        sha = state_dict_sha256(model)
    else:
        path = resolve_weights(spec, weights, allow_download)
        sha = file_sha256(str(path))
        model = build_network(spec, path)
    torch_device = pick_device(device)
    model = model.to(torch_device).eval()
    channels_last = torch_device.type == "cuda" and is_convolutional(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return LoadedEncoder(
        spec,
        model,
        torch_device,
        None if path is None else str(path),
        sha,
        preprocessing_for(spec, stain),
        autocast_dtype=resolve_precision(precision, torch_device),
        channels_last=channels_last,
        compiled=compile,
    )
