"""The ``model`` method: a TorchScript segmentation network run on a thumbnail at its own µm/px.

The contract with the model file (written by ``torch.jit.save``): input (1, 3, H, W) float32,
RGB in [0, 1] normalised with the configured mean and std; output (1, 1, h, w) logits (read
through a sigmoid) or (1, C, h, w) with C >= 2 class logits (softmax, channel
``tissue_channel``). An output at another size than the input is resized to the thumbnail.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsi_pipeline.config.workflow import TissueConfig, TissueModelConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import TileSource, require_mpp
from wsi_pipeline.tiling.tissue.base import TissueMap, register_tissue_method
from wsi_pipeline.tiling.tissue.brightfield import clean_mask
from wsi_pipeline.tiling.tissue.fluorescence import looks_fluorescent
from wsi_pipeline.tiling.tissue.thumbnail import read_thumbnail

if TYPE_CHECKING:  # torch is imported on use: the other methods must not pay for it
    import torch

MODEL_FIX = (
    "give the path of a TorchScript file saved with torch.jit.save (torch.jit.script or torch.jit.trace of the model)"
)
CONTRACT = (
    "the model must take a (1, 3, H, W) float32 RGB tensor and return (1, 1, h, w) logits "
    "or (1, C, h, w) class logits"
)


def _where(path: str | os.PathLike[str]) -> str:
    return f"tiling.tissue.model.path: {path}"


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> torch.jit.ScriptModule:
    # Keyed on modification time and size too, so a replaced file is loaded again.
    import torch

    with warnings.catch_warnings():
        # Recent torch marks TorchScript deprecated in favour of torch.export; it still loads,
        # and a warning per slide would bury the run's own messages.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        module = torch.jit.load(path, map_location="cpu")
    module.eval()
    return module


def load_tissue_model(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """Load a TorchScript model on the CPU (cached per file while the file is unchanged).

    Parameters
    ----------
    path
        The ``.pt`` file written by ``torch.jit.save``.

    Returns
    -------
    torch.jit.ScriptModule
        The model, in eval mode.

    Raises
    ------
    WSIPipelineError
        When the file is missing, unreadable or not TorchScript.
    """
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError as error:
        raise WSIPipelineError(
            f"the tissue segmentation model file cannot be read ({error.strerror or error})",
            where=_where(path),
            fix=f"check the path (relative paths start from the manifest's folder); {MODEL_FIX}",
        ) from None
    if not file.is_file():
        raise WSIPipelineError("the tissue segmentation model path is not a file", where=_where(path), fix=MODEL_FIX)
    try:
        return _load_cached(str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, ValueError, zipfile errors...
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no detail"
        raise WSIPipelineError(
            "cannot load the tissue segmentation model: it is not a TorchScript file "
            f"({type(error).__name__}: {detail})",
            where=_where(path),
            fix=MODEL_FIX,
        ) from None


def tissue_probability(
    module: torch.jit.ScriptModule, rgb: np.ndarray, model: TissueModelConfig
) -> np.ndarray:
    """Run a tissue model on a thumbnail and return the tissue probability of every pixel.

    Parameters
    ----------
    module
        A loaded model (see `load_tissue_model`).
    rgb
        (H, W, 3) uint8 thumbnail at ``model.mpp``.
    model
        Normalisation (mean, std) and which output channel is tissue.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1].

    Raises
    ------
    WSIPipelineError
        When the model fails on the input or returns a shape other than the contract's.
    """
    import torch

    height, width = rgb.shape[:2]
    # A copy: thumbnails may be read-only views, which torch will not wrap.
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(model.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(3, 1, 1)
    x = ((x - mean) / std).unsqueeze(0).contiguous()
    with torch.no_grad():
        try:
            out = module(x)
        except Exception as error:  # noqa: BLE001 - whatever the model raises, name the model
            raise WSIPipelineError(
                f"the tissue segmentation model failed on a {width}x{height} thumbnail "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'})",
                where=_where(model.path),
                fix=CONTRACT,
            ) from None
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != 1 or out.shape[1] < 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise WSIPipelineError(f"the tissue model returned {shape}", where=_where(model.path), fix=CONTRACT)
        out = out.float()
        if out.shape[1] == 1:
            prob = torch.sigmoid(out)
        else:
            if model.tissue_channel >= out.shape[1]:
                raise WSIPipelineError(
                    f"tissue_channel is {model.tissue_channel} but the model returns {out.shape[1]} channels",
                    where="tiling.tissue.model.tissue_channel",
                    fix=f"set tissue_channel to the tissue class index, 0-{out.shape[1] - 1}",
                )
            prob = torch.softmax(out, dim=1)[:, model.tissue_channel : model.tissue_channel + 1]
        if prob.shape[-2:] != (height, width):
            # Networks that pool or stride return a coarser map: bring it back to the thumbnail.
            prob = torch.nn.functional.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)
    return prob[0, 0].numpy().astype(np.float32, copy=False)


@register_tissue_method("model")
def model_method(source: TileSource, config: TissueConfig) -> TissueMap:
    """Segment tissue with ``config.model``: thumbnail at the model's µm/px, threshold, clean-up.

    The thumbnail is read at the model's µm/px (never finer than the slide), the probability
    thresholded at ``model.threshold``, then pieces smaller than ``min_object_um2`` dropped
    and holes smaller than ``max_hole_um2`` filled. Pen is not looked for: the mask is the model's.
    """
    model = config.model
    assert model is not None, "TissueConfig requires a 'model' section for method 'model'"
    module = load_tissue_model(model.path)
    rgb, scale, mpp = read_thumbnail(source, max(model.mpp, require_mpp(source)))
    tissue = tissue_probability(module, rgb, model) > model.threshold

    tissue = clean_mask(
        tissue, mpp, closing_um=0.0, min_object_um2=config.min_object_um2, max_hole_um2=config.max_hole_um2
    )
    modality = "fluorescence" if looks_fluorescent(rgb) else "brightfield"
    return TissueMap(tissue=tissue, pen=np.zeros_like(tissue), scale=scale, mpp=mpp, modality=modality)
