"""Whole-slide images through OpenSlide: physical scale, pyramid levels, tiles, thumbnails."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np
import openslide
from PIL import Image

from wsi_pipeline.errors import WSIPipelineError

#: A level counts as "fine enough" when its downsample exceeds the wanted one by at most this
#: fraction: reading 0.499 µm/px pixels for a 0.5 µm/px tile is fine, upsampling is not.
LEVEL_TOLERANCE = 0.02


class WholeSlide:
    """An open whole-slide image with a known physical scale.

    Parameters
    ----------
    path
        The slide file (any format OpenSlide reads).
    mpp_override
        µm/px to use instead of the slide's metadata (the cohort table's ``mpp`` column).

    Raises
    ------
    WSIPipelineError
        When the file is missing or unreadable, or when its µm/px is unknown and not overridden.
    """

    def __init__(self, path: str | Path, mpp_override: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WSIPipelineError(
                "slide file not found", where=str(self.path), fix="check slide_path in the cohort table"
            )
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as error:
            raise WSIPipelineError(
                f"OpenSlide cannot read this slide ({type(error).__name__}: {error})",
                where=str(self.path),
                fix="check the file is a complete slide in a format OpenSlide supports; re-export or re-copy it",
            ) from None
        self.mpp = self._resolve_mpp(mpp_override)

    def _resolve_mpp(self, override: float | None) -> float:
        if override is not None and np.isfinite(override):
            return float(override)
        props = self._slide.properties
        try:
            mpp_x = float(props[openslide.PROPERTY_NAME_MPP_X])
            mpp_y = float(props.get(openslide.PROPERTY_NAME_MPP_Y, mpp_x))
        except (KeyError, ValueError):
            raise WSIPipelineError(
                "the slide has no µm/px metadata (openslide.mpp-x), so its physical scale is unknown",
                where=str(self.path),
                fix="add an 'mpp' column to the cohort table with this slide's level-0 µm/px",
            ) from None
        if mpp_x <= 0 or abs(mpp_x - mpp_y) > 0.01 * mpp_x:
            raise WSIPipelineError(
                f"unusable µm/px metadata (x={mpp_x}, y={mpp_y}): pixels must be square",
                where=str(self.path),
                fix="set the slide's level-0 µm/px in the cohort table's 'mpp' column",
            )
        return mpp_x

    # -- geometry -----------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self._slide.dimensions

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return self._slide.level_count

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of each level relative to level 0."""
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level."""
        return self._slide.level_dimensions

    @property
    def properties(self) -> dict[str, str]:
        """All OpenSlide properties."""
        return dict(self._slide.properties)

    def level_for_downsample(self, downsample: float) -> int:
        """Return the coarsest level that is still at least as fine as ``downsample``.

        Reading from it and shrinking keeps all the detail while decoding as few pixels as
        possible; level 0 is used only when no reduced level is fine enough.
        """
        best = 0
        for level, level_downsample in enumerate(self.level_downsamples):
            if level_downsample <= downsample * (1 + LEVEL_TOLERANCE):
                best = level
        return best

    # -- pixels -------------------------------------------------------------------------------
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """Read an RGB region (transparent areas made white) at a level; (x, y) in level-0 px."""
        rgba = self._slide.read_region((int(x), int(y)), level, (int(width), int(height)))
        return flatten_on_white(rgba)

    def read_tile(self, x: int, y: int, size_level0: float, out_px: int) -> np.ndarray:
        """Read a square tile of ``size_level0`` level-0 px at (x, y), returned as ``out_px`` px RGB.

        The tile is read from the level nearest to (and not coarser than) the wanted resolution,
        then resized with an anti-aliasing filter only if that level's size differs.
        """
        downsample = size_level0 / out_px
        level = self.level_for_downsample(downsample)
        read_px = max(1, round(size_level0 / self.level_downsamples[level]))
        rgb = self.read_region(x, y, level, read_px, read_px)
        if read_px != out_px:
            rgb = np.asarray(Image.fromarray(rgb).resize((out_px, out_px), Image.Resampling.BOX if read_px > out_px else Image.Resampling.BILINEAR))
        return rgb

    def thumbnail(self, mpp: float) -> tuple[np.ndarray, float]:
        """Return an RGB thumbnail at about ``mpp`` µm/px and its exact level-0 px per thumbnail px."""
        width, height = self.dimensions
        factor = max(1.0, mpp / self.mpp)
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        image = self._slide.get_thumbnail(size).convert("RGB")
        scale = width / image.size[0]
        return np.asarray(image), scale

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the OpenSlide handle."""
        self._slide.close()

    def __enter__(self) -> "WholeSlide":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def flatten_on_white(rgba: Image.Image) -> np.ndarray:
    """Composite an RGBA image from OpenSlide on white and return RGB uint8.

    OpenSlide marks areas outside the scanned region as fully transparent; as background they
    must look like glass (white), not black.
    """
    array = np.asarray(rgba)
    rgb = array[..., :3]
    alpha = array[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    # OpenSlide returns premultiplied alpha, so out = rgb + (1 - alpha) * white.
    out = rgb.astype(np.uint16) + (255 - alpha[..., None].astype(np.uint16))
    return np.clip(out, 0, 255).astype(np.uint8)
