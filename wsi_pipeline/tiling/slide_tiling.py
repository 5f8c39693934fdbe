"""Tile one slide: tissue mask at thumbnail scale, grid at the target resolution, tissue filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_pipeline.config.workflow import TilingConfig
from wsi_pipeline.sources.wsi import WholeSlide
from wsi_pipeline.store.keys import short_hash
from wsi_pipeline.tiling.grid import GridGeometry, grid_coordinates, tissue_fractions
from wsi_pipeline.tiling.tissue import tissue_mask


@dataclass(frozen=True)
class SlideTiling:
    """The tissue tiles of one slide, with what is needed to draw and audit them."""

    coords: np.ndarray
    tissue_fraction: np.ndarray
    geometry: GridGeometry
    mask: np.ndarray
    thumbnail: np.ndarray
    thumbnail_scale: float
    n_grid_tiles: int


def centres_on_mask(mask: np.ndarray, scale: float, coords: np.ndarray, size_level0: float) -> np.ndarray:
    """Return whether each tile's centre falls on a True pixel of the thumbnail-scale mask."""
    centres = (coords + size_level0 / 2) / scale
    rows = np.clip(centres[:, 1].astype(np.int64), 0, mask.shape[0] - 1)
    cols = np.clip(centres[:, 0].astype(np.int64), 0, mask.shape[1] - 1)
    return mask[rows, cols]


def tiling_params(config: TilingConfig) -> dict[str, Any]:
    """Return every parameter that changes which tiles come out (what ``tiling_id`` hashes)."""
    return {"method": "grid-v2-centre-on-tissue", **config.model_dump(mode="json")}


def tiling_id(config: TilingConfig) -> str:
    """Return a short readable id of the tiling parameters, e.g. ``1um_128px_3f2a9c01bd``."""
    return f"{config.mpp:g}um_{config.tile_px}px_{short_hash(tiling_params(config))}"


def tile_slide(slide: WholeSlide, config: TilingConfig) -> SlideTiling:
    """Segment tissue and keep the grid tiles with enough of it.

    Parameters
    ----------
    slide
        An open slide with known µm/px.
    config
        Target µm/px, tile size, overlap and tissue settings.

    Returns
    -------
    SlideTiling
        Level-0 coordinates and tissue fractions of the kept tiles, plus the mask and thumbnail.
    """
    tissue = config.tissue
    thumbnail, scale = slide.thumbnail(tissue.thumbnail_mpp)
    mask = tissue_mask(
        thumbnail,
        mpp=scale * slide.mpp,
        min_object_um2=tissue.min_object_um2,
        max_hole_um2=tissue.max_hole_um2,
    )
    geometry = GridGeometry.at_resolution(slide.mpp, config.mpp, config.tile_px, config.overlap_px)
    width, height = slide.dimensions
    grid = grid_coordinates(width, height, geometry)
    fraction = tissue_fractions(mask, scale, grid, geometry.size_level0)
    # A tile at the edge of a piece can pass the fraction test with its centre on glass; models
    # and pathologists read a tile by its middle, so the centre must be on tissue too.
    keep = (fraction >= max(tissue.min_tissue_fraction, 1e-6)) & centres_on_mask(mask, scale, grid, geometry.size_level0)
    return SlideTiling(
        coords=grid[keep],
        tissue_fraction=fraction[keep],
        geometry=geometry,
        mask=mask,
        thumbnail=thumbnail,
        thumbnail_scale=scale,
        n_grid_tiles=len(grid),
    )
