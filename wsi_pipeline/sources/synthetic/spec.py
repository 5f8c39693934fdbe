"""What a synthetic slide should be (the spec) and what it turned out to be (the truth)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_pipeline.errors import WSIPipelineError

#: Level-0 pixels per cell of the truth grid. Fixed (not derived from mpp) so that truth masks of
#: every synthetic slide line up with level-0 coordinates by one integer factor.
MASK_DOWNSAMPLE = 16

_MIN_SIDE = 2 * MASK_DOWNSAMPLE


@dataclass(frozen=True)
class SyntheticSlideSpec:
    """Parameters of one synthetic whole-slide image.

    Parameters
    ----------
    width, height
        Level-0 size in pixels.
    mpp
        Level-0 µm per pixel; written into the TIFF resolution tags. Every size inside the slide
        (nuclei, textures) is given in µm and converted with it, so a slide looks physically the
        same at any ``mpp``.
    positive
        Whether the slide carries the class signal (clusters of lymphocytes).
    seed
        Non-negative integer; the same spec always renders the same pixels.
    n_levels
        Pyramid levels, each a 2x downsample of the previous one (at least 3).
    signal_fraction
        Fraction of the tissue covered by lymphocyte clusters in a positive slide (intended
        range 0.10-0.20; ignored for negative slides).
    """

    width: int
    height: int
    mpp: float
    positive: bool
    seed: int
    n_levels: int = 4
    signal_fraction: float = 0.15

    def __post_init__(self) -> None:
        where = f"SyntheticSlideSpec(width={self.width}, height={self.height}, seed={self.seed})"
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < _MIN_SIDE:
                raise WSIPipelineError(
                    f"{name} must be an integer of at least {_MIN_SIDE} pixels, got {value!r}",
                    where=where,
                    fix=f"give a synthetic slide {name} >= {_MIN_SIDE} (the demo uses 4096)",
                )
        if not (isinstance(self.mpp, (int, float, np.floating)) and math.isfinite(self.mpp) and self.mpp > 0):
            raise WSIPipelineError(
                f"mpp must be a positive number of µm per pixel, got {self.mpp!r}",
                where=where,
                fix="use e.g. mpp=0.5 (20x) or 0.25 (40x)",
            )
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise WSIPipelineError(
                f"seed must be a non-negative integer, got {self.seed!r}",
                where=where,
                fix="use a seed >= 0",
            )
        if not isinstance(self.n_levels, (int, np.integer)) or self.n_levels < 3:
            raise WSIPipelineError(
                f"n_levels must be an integer >= 3, got {self.n_levels!r}",
                where=where,
                fix="use n_levels=4 (downsamples 1, 2, 4, 8)",
            )
        smallest = min(self.width, self.height) >> (self.n_levels - 1)
        if smallest < 1:
            raise WSIPipelineError(
                f"{self.n_levels} levels of 2x downsampling leave less than one pixel",
                where=where,
                fix="use fewer levels or a larger slide",
            )
        if not (0.0 < self.signal_fraction <= 0.5):
            raise WSIPipelineError(
                f"signal_fraction must be in (0, 0.5], got {self.signal_fraction!r}",
                where=where,
                fix="use a value between 0.10 and 0.20 so the signal stays a minority of the tissue",
            )


@dataclass
class SlideTruth:
    """Ground truth of a rendered slide, on a grid ``mask_downsample`` times coarser than level 0.

    Cell ``(i, j)`` covers level-0 pixels ``[i*d, (i+1)*d) x [j*d, (j+1)*d)`` with
    ``d = mask_downsample``; the last row/column may be cut by the slide border.

    Attributes
    ----------
    tissue_mask
        Boolean, ``True`` where the cell centre is tissue.
    signal_mask
        Boolean, ``True`` where the class signal (lymphocyte clusters) is; always a subset of
        ``tissue_mask`` and empty for negative slides.
    mask_downsample
        Level-0 pixels per grid cell.
    tissue_fraction
        Tissue area over slide area, measured on the level-0 pixels.
    signal_fraction_of_tissue
        Signal cells over tissue cells.
    """

    tissue_mask: np.ndarray
    signal_mask: np.ndarray
    mask_downsample: int
    tissue_fraction: float
    signal_fraction_of_tissue: float


def truth_grid_shape(height: int, width: int) -> tuple[int, int]:
    """Return the (rows, cols) of the truth grid of a ``height`` x ``width`` slide."""
    return -(-height // MASK_DOWNSAMPLE), -(-width // MASK_DOWNSAMPLE)
