"""Stain normalisation as an encoder's first preprocessing step.

The target (the colours tiles are mapped to) is one per cohort: Macenko's published H&E
reference, or fitted on the reference image(s) the workflow names. The source stains are
estimated per tile, or once per slide from a sample of its tiles (steadier on tiles with little
tissue). Method, target values and source mode all go into the encoder's store key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features.stain import (
    STAIN_METHODS,
    MacenkoTarget,
    StainTarget,
    normalise,
)

#: Image files a reference folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class StainSettings:
    """What the workflow asks for (hashable, so loaded encoders can be cached on it).

    ``target`` is ``"default"`` (Macenko's published reference; Reinhard has none) or the path of
    a reference image or of a folder of them; ``source`` is ``"tile"`` or ``"slide"``.
    """

    method: str
    target: str = "default"
    source: str = "tile"
    slide_sample_tiles: int = 64


def read_reference_images(path: Path) -> list[np.ndarray]:
    """The RGB pixels of a reference image, or of every image in a reference folder."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise WSIPipelineError(
            f"no stain reference image at {path}",
            where="field 'features.stain_normalisation.target'",
            fix=f"give an image file ({', '.join(IMAGE_SUFFIXES)}) or a folder of them, or 'default'",
        )
    from PIL import Image

    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB")))
        except OSError as error:
            raise WSIPipelineError(f"cannot read stain reference image: {error}", where=str(file), fix="give a PNG, JPEG or TIFF image") from None
    return images


def fit_target(settings: StainSettings) -> StainTarget:
    """The cohort's target for ``settings``."""
    method = STAIN_METHODS[settings.method]
    if settings.target == "default":
        if settings.method != "macenko":
            raise WSIPipelineError(
                f"stain normalisation '{settings.method}' has no default target",
                where="field 'features.stain_normalisation.target'",
                fix="give a reference image (or a folder of them) whose colours the tiles should take",
            )
        return MacenkoTarget()
    images = read_reference_images(Path(settings.target).expanduser())
    batches = [torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None] for image in images]
    try:
        return method.fit(batches)
    except ValueError as error:
        raise WSIPipelineError(
            f"cannot fit a {settings.method} target: {error}",
            where=settings.target,
            fix="use a reference image with stained tissue in it (not mostly glass)",
        ) from None


@dataclass(frozen=True)
class StainStep:
    """The preprocessing step: ``(B, 3, H, W)`` float RGB in [0, 255] → the same, normalised."""

    settings: StainSettings
    target: StainTarget

    @classmethod
    def from_settings(cls, settings: StainSettings) -> StainStep:
        """Fit the cohort's target (from the reference image, or the published default)."""
        return cls(settings, fit_target(settings))

    def __call__(self, batch: torch.Tensor, source: StainTarget | None = None) -> torch.Tensor:
        return normalise(batch, self.target, source=source)

    def fit_source(self, tiles: np.ndarray | torch.Tensor) -> StainTarget | None:
        """A slide's own stains from a sample of its (B, H, W, 3) tiles (``None`` when it has too
        little tissue: its tiles are then estimated one by one)."""
        if isinstance(tiles, np.ndarray):
            tiles = torch.from_numpy(np.ascontiguousarray(tiles))
        batch = tiles.permute(0, 3, 1, 2)
        fit = STAIN_METHODS[self.settings.method].fit
        try:
            return fit(batch, **_fit_options(self.target))
        except ValueError:
            return None

    @property
    def per_slide(self) -> bool:
        """Whether sources are fitted once per slide rather than per tile."""
        return self.settings.source == "slide"

    def describe(self) -> dict[str, Any]:
        """Method, target values and source mode: part of the encoder's store key."""
        return {"method": self.settings.method, "target": self.target.to_dict(), "source": self.settings.source}


def _fit_options(target: StainTarget) -> dict[str, Any]:
    """Fit a slide's source with the thresholds of the target, so both sides see tissue alike."""
    data = target.to_dict()
    options = ("l_threshold", "min_pixels") if data["method"] == "reinhard" else ("io", "beta", "alpha", "conc_percentile", "min_pixels")
    return {k: data[k] for k in options if k in data}
