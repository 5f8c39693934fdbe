"""The plain method: Otsu on saturation, then morphological clean-up (no pen or border removal)."""

from __future__ import annotations

import numpy as np
from skimage import color, filters

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.sources.protocol import TileSource
from wsi_pipeline.tiling.tissue.base import TissueMap, register_tissue_method
from wsi_pipeline.tiling.tissue.brightfield import CLOSING_UM, clean_mask
from wsi_pipeline.tiling.tissue.thumbnail import segmentation_thumbnail

#: Pixels this bright and this grey are glass whatever Otsu says: keeps a slide that is almost
#: all tissue from having its paler tissue thrown out as "background".
GLASS_MIN_VALUE = 0.92
GLASS_MAX_SATURATION = 0.05


def otsu_saturation_mask(
    rgb: np.ndarray,
    *,
    mpp: float,
    min_object_um2: float = 20000.0,
    max_hole_um2: float = 20000.0,
) -> np.ndarray:
    """Segment tissue in an RGB thumbnail.

    Stained tissue is saturated and glass is grey, so Otsu's threshold on the HSV saturation
    channel separates them; a closing joins nuclei and stroma into solid pieces, small specks
    are removed and small holes filled.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 thumbnail.
    mpp
        µm per thumbnail pixel, to turn the physical size limits into pixels.
    min_object_um2
        Tissue pieces smaller than this area (µm²) are dropped.
    max_hole_um2
        Holes smaller than this area (µm²) are filled.

    Returns
    -------
    numpy.ndarray
        (H, W) bool mask, True on tissue.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    hsv = color.rgb2hsv(rgb)
    saturation, value = hsv[..., 1], hsv[..., 2]
    if np.ptp(saturation) < 1e-3:  # a uniform image: nothing to separate
        return np.zeros(rgb.shape[:2], dtype=bool)
    threshold = filters.threshold_otsu(saturation)
    mask = saturation > threshold
    mask &= ~((value >= GLASS_MIN_VALUE) & (saturation <= GLASS_MAX_SATURATION))

    # Join structures up to ~16 µm apart, then the same size clean-up as every method.
    return clean_mask(mask, mpp, closing_um=CLOSING_UM, min_object_um2=min_object_um2, max_hole_um2=max_hole_um2)


@register_tissue_method("otsu_saturation")
def otsu_saturation(source: TileSource, config: TissueConfig) -> TissueMap:
    """Segment with `otsu_saturation_mask` on the segmentation thumbnail; pen is not looked for."""
    rgb, scale, mpp = segmentation_thumbnail(source, config)
    tissue = otsu_saturation_mask(
        rgb, mpp=mpp, min_object_um2=config.min_object_um2, max_hole_um2=config.max_hole_um2
    )
    return TissueMap(
        tissue=tissue,
        pen=np.zeros_like(tissue),
        scale=scale,
        mpp=mpp,
        modality="brightfield",
    )
