"""The tile grid at a physical resolution and the fraction of each tile a mask covers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_pipeline.sources.protocol import level_for_downsample


@dataclass(frozen=True)
class GridGeometry:
    """How a tile at the target resolution maps onto level 0.

    Attributes
    ----------
    tile_px
        Tile side at the target resolution.
    size_level0
        Tile side in level-0 pixels (may be fractional: 256 px at 0.5 µm/px on a 0.49 µm/px
        slide spans 261.2 level-0 px).
    stride_level0
        Distance between neighbouring tiles in level-0 pixels.
    mpp
        The tiles' effective µm/px: the target, or the µm/px of a pyramid level within
        tolerance of it, which is then read without resampling.
    read_level
        The pyramid level tiles are read from (the coarsest at least as fine as ``mpp``).
    """

    tile_px: int
    size_level0: float
    stride_level0: float
    mpp: float
    read_level: int = 0

    @classmethod
    def at_resolution(
        cls,
        slide_mpp: float,
        target_mpp: float,
        tile_px: int,
        overlap_px: int = 0,
        level_downsamples: tuple[float, ...] = (1.0,),
        tolerance: float = 0.0,
    ) -> GridGeometry:
        """Geometry of ``tile_px`` tiles at ``target_mpp`` on a slide scanned at ``slide_mpp``.

        Parameters
        ----------
        slide_mpp
            Level-0 µm/px.
        target_mpp
            Wanted µm/px of the tiles.
        tile_px, overlap_px
            Tile side and overlap between neighbours, at the target resolution.
        level_downsamples
            The slide's pyramid (downsample of each level).
        tolerance
            When a level's µm/px is within this fraction of the target, tiles use that level's
            scale exactly: they are read without resampling and their effective µm/px is the
            level's (a 0.499 µm/px slide read "at 0.5" keeps its own pixels).

        Returns
        -------
        GridGeometry
        """
        scale = target_mpp / slide_mpp
        for downsample in level_downsamples:
            if abs(downsample / scale - 1.0) <= tolerance:
                scale = float(downsample)
                break
        level = level_for_downsample(level_downsamples, scale)
        return cls(
            tile_px=tile_px,
            size_level0=tile_px * scale,
            stride_level0=(tile_px - overlap_px) * scale,
            mpp=slide_mpp * scale,
            read_level=level,
        )


def grid_coordinates(width: int, height: int, geometry: GridGeometry) -> np.ndarray:
    """Return the level-0 (x, y) top-left corners of a grid covering the whole slide.

    The last column and row run past the right and bottom edges when the slide is not a whole
    number of tiles: tissue in those strips is tiled too (the part outside is read as glass).

    Parameters
    ----------
    width, height
        Level-0 slide size in pixels.
    geometry
        Tile size and stride in level-0 pixels.

    Returns
    -------
    numpy.ndarray
        (N, 2) int64, row-major order (y, then x).
    """
    xs = _starts(width, geometry.size_level0, geometry.stride_level0)
    ys = _starts(height, geometry.size_level0, geometry.stride_level0)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def _starts(length: int, size: float, stride: float) -> np.ndarray:
    """Tile starts along one axis until a tile reaches the far edge."""
    if length <= 0:
        return np.zeros(0, dtype=np.int64)
    count = 1 if length <= size else math.ceil((length - size) / stride) + 1
    return np.round(np.arange(count) * stride).astype(np.int64)


def mask_fractions(mask: np.ndarray, scale: float, coords: np.ndarray, size_level0: float) -> np.ndarray:
    """Return the fraction of each tile a thumbnail-scale mask covers.

    The fraction is of the whole tile: a tile running past the slide's edge counts its outside
    part as not covered. Uses a summed-area table, so the cost is one pass over the mask plus
    O(1) per tile.

    Parameters
    ----------
    mask
        (H, W) bool mask covering the slide.
    scale
        Level-0 pixels per mask pixel.
    coords
        (N, 2) level-0 top-left corners.
    size_level0
        Tile side in level-0 pixels.

    Returns
    -------
    numpy.ndarray
        (N,) float32 in [0, 1].
    """
    if len(coords) == 0:
        return np.zeros(0, dtype=np.float32)
    # One int32 table filled in place (int32 counts up to 2^31 mask pixels): a thumbnail of a
    # huge slide has tens of millions of pixels, and int64 temporaries would triple the memory.
    dtype = np.int32 if mask.size < 2**31 else np.int64
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    np.cumsum(mask, axis=0, dtype=dtype, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    side = size_level0 / scale
    x0 = np.round(coords[:, 0] / scale).astype(np.int64)
    y0 = np.round(coords[:, 1] / scale).astype(np.int64)
    # A tile smaller than a mask pixel still covers at least that pixel.
    cells = max(1, round(side))
    x1, y1 = x0 + cells, y0 + cells
    cx0, cx1 = np.clip(x0, 0, mask.shape[1]), np.clip(x1, 0, mask.shape[1])
    cy0, cy1 = np.clip(y0, 0, mask.shape[0]), np.clip(y1, 0, mask.shape[0])
    inside = table[cy1, cx1].astype(np.int64) - table[cy0, cx1] - table[cy1, cx0] + table[cy0, cx0]
    return (inside / (cells * cells)).astype(np.float32)
