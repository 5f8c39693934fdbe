"""A QC picture of a slide's tiling: thumbnail, tissue outline, kept tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import segmentation

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.tiling.slide_tiling import SlideTiling


def tiling_overlay(tiling: SlideTiling) -> Image.Image:
    """Draw the kept tiles (green boxes) and the tissue outline (blue) on the thumbnail."""
    image = tiling.thumbnail.copy()
    outline = segmentation.find_boundaries(tiling.mask, mode="inner")
    image[outline] = (30, 60, 220)
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    side = tiling.geometry.size_level0 / tiling.thumbnail_scale
    for x, y in tiling.coords / tiling.thumbnail_scale:
        draw.rectangle([x, y, x + side, y + side], outline=(20, 160, 60))
    return picture


def save_tiling_overlay(tiling: SlideTiling, path: Path) -> Path:
    """Save :func:`tiling_overlay` as a PNG (written to a temporary name, then renamed)."""
    with atomic_path(path) as tmp:
        tiling_overlay(tiling).save(tmp, format="PNG")
    return path
