"""Write an RGB array as a tiled, JPEG-compressed pyramidal TIFF that OpenSlide opens.

Layout choices, all checked against OpenSlide's generic-TIFF reader:

- one page per level, level 0 first, each reduced level tagged ``subfiletype=1`` (OpenSlide does
  not see reduced levels without it);
- ``photometric='rgb'``: tifffile then stores YCbCr JPEG (4:2:0) tagged photometric YCbCr, which
  OpenSlide decodes to the right colours (passing ``'ycbcr'`` would mean the input already is YCbCr);
- resolution in pixels per centimetre with ``ResolutionUnit=CENTIMETER``, which OpenSlide turns
  into ``openslide.mpp-x``/``mpp-y``;
- no date, description or JSON metadata, so the same pixels always give the same bytes (the
  feature store fingerprints slide files by content).
"""

from __future__ import annotations

import os

import numpy as np
import tifffile

#: The Software tag; fixed so files are byte-reproducible.
SOFTWARE = "wsi-pipeline synthetic"


def downsample_2x(rgb: np.ndarray) -> np.ndarray:
    """Halve an (H, W, C) uint8 image by averaging 2x2 blocks (odd edges repeat their last pixel).

    Parameters
    ----------
    rgb
        uint8 (H, W, C).

    Returns
    -------
    numpy.ndarray
        uint8 (ceil(H/2), ceil(W/2), C), rounded to nearest.
    """
    height, width = rgb.shape[:2]
    if height % 2 or width % 2:
        rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    total = rgb[0::2, 0::2].astype(np.uint16)
    total += rgb[1::2, 0::2]
    total += rgb[0::2, 1::2]
    total += rgb[1::2, 1::2]
    total += 2  # round half up instead of truncating
    total >>= 2
    return total.astype(np.uint8)


def level_page_options(mpp: float, index: int, tile: int, quality: int) -> dict:
    """``TiffWriter.write`` options of pyramid level ``index`` in the layout OpenSlide reads.

    Tiled JPEG (photometric RGB, stored as YCbCr), resolution in pixels per centimetre (which
    OpenSlide reports as ``openslide.mpp-x``), reduced levels tagged ``subfiletype=1`` (or
    OpenSlide does not see them), and no date or description, so the bytes are reproducible.
    """
    pixels_per_cm = 1e4 / (mpp * 2**index)
    return {
        "photometric": "rgb",
        "tile": (tile, tile),
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "resolution": (pixels_per_cm, pixels_per_cm),
        "resolutionunit": "CENTIMETER",
        "subfiletype": 1 if index else 0,
        "software": SOFTWARE,
        "metadata": None,
    }


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    mpp: float,
    n_levels: int,
    tile: int = 256,
    quality: int = 90,
) -> None:
    """Write ``rgb`` and ``n_levels - 1`` 2x reductions as a tiled JPEG pyramid.

    Parameters
    ----------
    path
        Output file; overwritten. Not atomic: see `generate_slide` for that.
    rgb
        uint8 (H, W, 3) level-0 pixels.
    mpp
        Level-0 µm per pixel; each reduced level gets the matching coarser resolution.
    n_levels
        Number of pages (level 0 included), each half the size of the previous one.
    tile
        Tile side in pixels (a multiple of 16).
    quality
        JPEG quality, 1-100.

    Raises
    ------
    ValueError
        If the array, the level count, the tile size or the quality is unusable.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if n_levels < 1 or min(rgb.shape[:2]) >> (n_levels - 1) < 1:
        raise ValueError(f"cannot make {n_levels} 2x levels from a {rgb.shape[1]}x{rgb.shape[0]} image")
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1-100, got {quality}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")

    # Classic TIFF offsets are 32-bit; JPEG is far smaller than raw, but stay safe for huge slides.
    bigtiff = rgb.nbytes > 2**31
    level = rgb
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as writer:
        for index in range(n_levels):
            if index:
                level = downsample_2x(level)
            # One thread: the engine runs one slide per worker, so threads here would only
            # oversubscribe the cores.
            writer.write(level, **level_page_options(mpp, index, tile, quality), maxworkers=1)
