"""Tissue segmentation, the tile grid at a target µm/px, per-tile QC, QC pictures and contours."""

from wsi_pipeline.tiling.grid import GridGeometry, grid_coordinates, mask_fractions
from wsi_pipeline.tiling.slide_tiling import (
    QC_COLUMNS,
    SlideTiling,
    tile_slide,
    tiling_id,
    tiling_params,
)
from wsi_pipeline.tiling.tissue import (
    TissueMap,
    get_tissue_method,
    segment_tissue,
    tissue_method_names,
)

__all__ = [
    "QC_COLUMNS",
    "GridGeometry",
    "SlideTiling",
    "TissueMap",
    "get_tissue_method",
    "grid_coordinates",
    "mask_fractions",
    "segment_tissue",
    "tile_slide",
    "tiling_id",
    "tiling_params",
    "tissue_method_names",
]
