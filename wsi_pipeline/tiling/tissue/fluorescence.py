"""Tissue on fluorescence scans: bright signal on a dark background.

A fluorescence image is the negative of a brightfield one: the background is dark and tissue
glows (DAPI nuclei, autofluorescence), so tissue is segmented on brightness. Telling the two
apart needs more than "mostly dark": a brightfield slide with wide black scanner padding is
mostly dark too, but it still shows bright, grey glass, which a fluorescence scan never does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import filters

from wsi_pipeline.tiling.channels import channel_max
from wsi_pipeline.tiling.tissue.brightfield import (
    clean_mask,
    glass_pixels,
    stats_stride,
)

#: A pixel is dark when its brightest channel is below this level.
DARK_LEVEL = 64
#: Most of a fluorescence image is dark background.
MIN_DARK_FRACTION = 0.5
#: Of the pixels that are not dark, at most this fraction may look like bright grey glass.
MAX_GLASS_SHARE = 0.25
#: Brightness is smoothed over about a cell (µm), so tissue reads as a region, not single nuclei.
SMOOTHING_UM = 10.0
#: The threshold stays at least this many grey levels above the background.
MIN_CONTRAST = 6.0
#: Gaps this wide (µm) between bright structures are closed.
CLOSING_UM = 8.0


def looks_fluorescent(rgb: np.ndarray) -> bool:
    """Whether an image is a fluorescence scan (dark background, bright signal).

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 thumbnail.

    Returns
    -------
    bool
        True when at least half the pixels are dark and few of the others look like bright,
        grey glass (so a brightfield slide with black padding is not called fluorescent).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected a non-empty (H, W, 3) RGB image, got shape {rgb.shape}")
    # Fractions of the whole image: a regular subsample measures them as well, for less.
    stride = stats_stride(*rgb.shape[:2])
    sample = rgb[::stride, ::stride]
    dark_fraction = float((channel_max(sample) < DARK_LEVEL).mean())
    glass_fraction = float(glass_pixels(sample).mean())
    return dark_fraction >= MIN_DARK_FRACTION and glass_fraction <= MAX_GLASS_SHARE * (1.0 - dark_fraction)


def fluorescence_mask(
    rgb: np.ndarray, mpp: float, *, min_object_um2: float = 20000.0, max_hole_um2: float = 20000.0
) -> np.ndarray:
    """Segment tissue in a fluorescence thumbnail by its brightness.

    Otsu's threshold on the smoothed brightest channel separates glowing tissue from the dark
    background; it is kept at least `MIN_CONTRAST` grey levels above the background and at most
    halfway to the brightest tissue, so a slide that is nearly all tissue, or all background,
    is not split down the middle.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 thumbnail.
    mpp
        µm per thumbnail pixel.
    min_object_um2
        Pieces smaller than this area (µm²) are dropped.
    max_hole_um2
        Holes smaller than this area (µm²) are filled.

    Returns
    -------
    numpy.ndarray
        (H, W) bool, True on tissue.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    brightness = channel_max(rgb).astype(np.float32)
    sigma = SMOOTHING_UM / mpp
    if sigma >= 0.5:
        brightness = ndimage.gaussian_filter(brightness, sigma)
    background = float(np.percentile(brightness, 5))
    brightest = float(np.percentile(brightness, 99))
    low = background + MIN_CONTRAST
    high = max(low, background + 0.5 * (brightest - background))
    threshold = filters.threshold_otsu(brightness) if np.ptp(brightness) > 0 else low
    mask = brightness > float(np.clip(threshold, low, high))

    return clean_mask(
        mask, mpp, closing_um=CLOSING_UM, min_object_um2=min_object_um2, max_hole_um2=max_hole_um2
    )
