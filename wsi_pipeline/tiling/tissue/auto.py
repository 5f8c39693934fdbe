"""The default method: read the slide as brightfield or fluorescence, then segment accordingly."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.sources.protocol import TileSource
from wsi_pipeline.tiling.tissue.base import TissueMap, register_tissue_method
from wsi_pipeline.tiling.tissue.brightfield import brightfield_masks
from wsi_pipeline.tiling.tissue.fluorescence import fluorescence_mask, looks_fluorescent
from wsi_pipeline.tiling.tissue.thumbnail import segmentation_thumbnail


@register_tissue_method("auto")
def auto(source: TileSource, config: TissueConfig) -> TissueMap:
    """Segment tissue, choosing brightfield or fluorescence from the thumbnail itself.

    Brightfield: optical density and stain colour, without glass, black padding, grey debris
    and (with ``config.remove_pen``) pen ink. Fluorescence: brightness; pen is not looked for.
    """
    rgb, scale, mpp = segmentation_thumbnail(source, config)
    if looks_fluorescent(rgb):
        tissue = fluorescence_mask(
            rgb, mpp, min_object_um2=config.min_object_um2, max_hole_um2=config.max_hole_um2
        )
        return TissueMap(
            tissue=tissue, pen=np.zeros_like(tissue), scale=scale, mpp=mpp, modality="fluorescence"
        )
    tissue, pen = brightfield_masks(
        rgb,
        mpp,
        min_object_um2=config.min_object_um2,
        max_hole_um2=config.max_hole_um2,
        remove_pen=config.remove_pen,
    )
    return TissueMap(tissue=tissue, pen=pen, scale=scale, mpp=mpp, modality="brightfield")
