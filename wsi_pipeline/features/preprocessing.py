"""An encoder's preprocessing, run on the device: stain normalisation, resize, crop, normalise.

The steps and their constants come from the entry's timm data config (see
:meth:`EncoderSpec.data_config`); :meth:`Preprocessing.describe` lists them all, and that
description is part of the encoder's store key, so features made with other preprocessing are
never mixed with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

#: timm interpolation names → torch's ``interpolate`` modes.
TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


class StainStep(Protocol):
    """A stain normaliser applied to (B, 3, H, W) float RGB in [0, 255] on the device; ``source``
    is a slide's own fitted stains (``None``: each tile's are estimated)."""

    def __call__(self, batch: torch.Tensor, source: Any = None) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class Preprocessing:
    """Tiles (B, H, W, 3) uint8 → the network's normalised input (B, 3, S, S).

    Attributes
    ----------
    input_px
        Side ``S`` of the network's input.
    interpolation
        Resize filter (timm's name); anti-aliased when shrinking.
    crop_pct
        timm's crop fraction: the tile is resized to ``floor(S / crop_pct)`` and its centre
        ``S`` pixels kept (1.0: the whole tile is resized to ``S``).
    mean, std
        Per-channel normalisation of [0, 1] RGB.
    stain
        Optional stain normalisation, applied first, on the tile's own pixels.
    """

    input_px: int
    interpolation: str
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stain: StainStep | None = None
    _constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_data_config(cls, config: dict[str, Any], stain: StainStep | None = None) -> Preprocessing:
        """From timm's resolved data config (``EncoderSpec.data_config()``)."""
        if config["interpolation"] not in TORCH_MODES:
            raise ValueError(f"interpolation {config['interpolation']!r} is not one of {sorted(TORCH_MODES)}")
        return cls(int(config["input_size"][-1]), config["interpolation"], float(config["crop_pct"]),
                   tuple(config["mean"]), tuple(config["std"]), stain)

    @property
    def resize_px(self) -> int:
        """The side tiles are resized to before the centre crop (timm's ``scale_size``)."""
        return self.input_px if self.crop_pct >= 1.0 else math.floor(self.input_px / self.crop_pct)

    def describe(self) -> dict[str, Any]:
        """Every step and constant, for the store key and provenance."""
        return {
            "stain": None if self.stain is None else self.stain.describe(),
            "resize_to": self.resize_px,
            "interpolation": f"{self.interpolation}+antialias",
            "center_crop": self.input_px,
            "mean": [round(float(v), 6) for v in self.mean],
            "std": [round(float(v), 6) for v in self.std],
        }

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # (x / 255 - mean) / std as one scale and one shift, made once per device: in place they
        # take half the passes of the plain formula, and spare a host-to-device copy per batch.
        if device not in self._constants:
            std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
            mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
            self._constants[device] = (1.0 / (255.0 * std), -mean / std)
        return self._constants[device]

    def __call__(self, tiles: torch.Tensor, stain_source: Any = None) -> torch.Tensor:
        """``tiles`` (B, H, W, 3) uint8 on the target device → (B, 3, S, S) float32.

        ``stain_source`` is the slide's fitted stains when they are estimated per slide.
        """
        batch = tiles.permute(0, 3, 1, 2).float()
        if self.stain is not None:
            batch = self.stain(batch, stain_source)
        size = self.resize_px
        if batch.shape[-2:] != (size, size):
            mode = TORCH_MODES[self.interpolation]
            options = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
            batch = F.interpolate(batch, size=(size, size), mode=mode, **options)
        if size != self.input_px:
            top = (size - self.input_px) // 2
            batch = batch[:, :, top : top + self.input_px, top : top + self.input_px]
        scale, shift = self._scale_shift(batch.device)
        # Cubic filters overshoot [0, 255]; torchvision's tensor resize clamps uint8 images the same way.
        # In place: ``batch`` is always this method's own tensor (the float copy of the uint8
        # tiles, or a resize of it), and a new tensor per step is a pass over memory per batch.
        if self.interpolation == "bicubic":
            batch = batch.clamp_(0, 255)
        return batch.mul_(scale).add_(shift)
