"""The tile grid at a physical resolution and each tile's tissue fraction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GridGeometry:
    """How a tile at the target resolution maps onto level 0.

    Attributes
    ----------
    tile_px
        Tile side at the target resolution.
    size_level0
        Tile side in level-0 pixels (may be fractional: 256 px at 0.5 µm/px on a 0.499 µm/px
        slide spans 256.5 level-0 px).
    stride_level0
        Distance between neighbouring tiles in level-0 pixels.
    """

    tile_px: int
    size_level0: float
    stride_level0: float

    @classmethod
    def at_resolution(cls, slide_mpp: float, target_mpp: float, tile_px: int, overlap_px: int = 0) -> "GridGeometry":
        """Geometry of ``tile_px`` tiles at ``target_mpp`` on a slide scanned at ``slide_mpp``."""
        scale = target_mpp / slide_mpp
        return cls(tile_px=tile_px, size_level0=tile_px * scale, stride_level0=(tile_px - overlap_px) * scale)


def grid_coordinates(width: int, height: int, geometry: GridGeometry) -> np.ndarray:
    """Return the level-0 (x, y) top-left corners of every whole tile inside the slide.

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
    size, stride = geometry.size_level0, geometry.stride_level0
    n_x = int(np.floor((width - size) / stride)) + 1 if width >= size else 0
    n_y = int(np.floor((height - size) / stride)) + 1 if height >= size else 0
    xs = np.round(np.arange(n_x) * stride).astype(np.int64)
    ys = np.round(np.arange(n_y) * stride).astype(np.int64)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def tissue_fractions(mask: np.ndarray, scale: float, coords: np.ndarray, size_level0: float) -> np.ndarray:
    """Return the fraction of each tile covered by tissue in a thumbnail-scale mask.

    Uses a summed-area table, so the cost is one pass over the mask plus O(1) per tile.

    Parameters
    ----------
    mask
        (H, W) bool tissue mask.
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
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    x0 = np.clip(np.round(coords[:, 0] / scale).astype(np.int64), 0, mask.shape[1])
    y0 = np.clip(np.round(coords[:, 1] / scale).astype(np.int64), 0, mask.shape[0])
    x1 = np.clip(np.round((coords[:, 0] + size_level0) / scale).astype(np.int64), 0, mask.shape[1])
    y1 = np.clip(np.round((coords[:, 1] + size_level0) / scale).astype(np.int64), 0, mask.shape[0])
    # A tile smaller than a mask pixel still covers at least that pixel.
    x1 = np.maximum(x1, np.minimum(x0 + 1, mask.shape[1]))
    y1 = np.maximum(y1, np.minimum(y0 + 1, mask.shape[0]))
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return (inside / area).astype(np.float32)
