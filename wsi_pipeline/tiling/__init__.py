"""Tissue segmentation, the tile grid at a target µm/px, per-tile tissue fraction, QC pictures."""

from wsi_pipeline.tiling.grid import GridGeometry, grid_coordinates, tissue_fractions
from wsi_pipeline.tiling.slide_tiling import SlideTiling, tile_slide, tiling_id, tiling_params
from wsi_pipeline.tiling.tissue import tissue_mask

__all__ = [
    "GridGeometry",
    "SlideTiling",
    "grid_coordinates",
    "tile_slide",
    "tiling_id",
    "tiling_params",
    "tissue_fractions",
    "tissue_mask",
]
