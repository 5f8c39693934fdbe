"""The thumbnail a slide is segmented on: how fine, and reading it."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.sources.protocol import TileSource, require_mpp

#: A mask should have about this many pixels on its long side: coarser loses small pieces and
#: the outline of a biopsy, finer costs time for no better tile fractions.
MIN_LONG_SIDE = 1024


def segmentation_mpp(
    source_mpp: float,
    width: int,
    height: int,
    thumbnail_mpp: float,
    min_long_side: int = MIN_LONG_SIDE,
    max_pixels: float | None = None,
) -> float:
    """Return the µm/px to segment a slide at.

    The configured ``thumbnail_mpp`` suits a resection slide; a small image (a biopsy crop, a
    test region) would then give a mask of a few hundred pixels, so it is segmented finer, at
    whatever gives about ``min_long_side`` pixels on its long side, but never finer than the
    slide itself. A huge slide is segmented coarser when ``thumbnail_mpp`` would give more than
    ``max_pixels``: the segmentation's memory follows its thumbnail, and this bounds it.

    Parameters
    ----------
    source_mpp
        Level-0 µm/px of the slide.
    width, height
        Level-0 size in pixels.
    thumbnail_mpp
        The coarsest µm/px wanted (``TissueConfig.thumbnail_mpp``).
    min_long_side
        Pixels wanted on the long side of the mask when ``thumbnail_mpp`` would give fewer.
    max_pixels
        Most pixels the thumbnail may have; None for no bound.

    Returns
    -------
    float
        µm/px, between ``source_mpp`` and ``max(source_mpp, thumbnail_mpp)``.

    Examples
    --------
    >>> segmentation_mpp(0.25, 100_000, 80_000, 8.0)  # a resection: 25 mm wide
    8.0
    >>> segmentation_mpp(0.5, 2048, 1024, 8.0)  # 1 mm wide: 1024 px across
    1.0
    >>> round(segmentation_mpp(0.25, 150_000, 100_000, 8.0, max_pixels=4e6), 2)  # 37.5 x 25 mm
    15.31
    """
    if not (source_mpp > 0 and thumbnail_mpp > 0 and min_long_side > 0):
        raise ValueError(
            f"µm/px and sizes must be positive (source_mpp={source_mpp}, thumbnail_mpp={thumbnail_mpp}, "
            f"min_long_side={min_long_side})"
        )
    long_side_um = max(width, height) * source_mpp
    mpp = max(source_mpp, min(thumbnail_mpp, long_side_um / min_long_side))
    if max_pixels is not None:
        mpp = max(mpp, source_mpp * (width * height / max_pixels) ** 0.5)
    return float(mpp)


def read_thumbnail(source: TileSource, mpp: float) -> tuple[np.ndarray, float, float]:
    """Read the whole slide at about ``mpp`` µm/px.

    Parameters
    ----------
    source
        An open source whose ``mpp`` is known.
    mpp
        Wanted µm/px (the source never returns finer than level 0).

    Returns
    -------
    rgb : numpy.ndarray
        (H, W, 3) uint8.
    scale : float
        Level-0 pixels per thumbnail pixel, as the source reports it.
    mpp : float
        µm/px of the thumbnail actually returned: ``scale * source.mpp``.
    """
    slide_mpp = require_mpp(source)
    rgb, scale = source.thumbnail(mpp)
    return rgb, float(scale), float(scale) * slide_mpp


def segmentation_thumbnail(source: TileSource, config: TissueConfig) -> tuple[np.ndarray, float, float]:
    """Read the thumbnail a slide is segmented on, at `segmentation_mpp`.

    Parameters
    ----------
    source
        An open source whose ``mpp`` is known.
    config
        Tissue settings; ``config.thumbnail_mpp`` is the coarsest µm/px used.

    Returns
    -------
    rgb : numpy.ndarray
        (H, W, 3) uint8.
    scale : float
        Level-0 pixels per thumbnail pixel.
    mpp : float
        µm per thumbnail pixel.
    """
    slide_mpp = require_mpp(source)
    width, height = source.dimensions
    mpp = segmentation_mpp(
        slide_mpp, width, height, config.thumbnail_mpp, max_pixels=config.max_thumbnail_megapixels * 1e6
    )
    return read_thumbnail(source, mpp)
