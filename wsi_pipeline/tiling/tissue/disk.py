"""Binary dilation and closing by a disk, in time independent of the disk's radius.

A dilation by ``skimage.morphology.disk(r)`` keeps every pixel within Euclidean distance ``r``
of a True pixel; an erosion keeps every True pixel whose nearest False pixel is farther than
``r``. Both are thresholds of a Euclidean distance transform, which costs O(pixels) whatever
``r`` is, where ``scipy.ndimage.binary_dilation`` with a disk costs O(pixels x disk area). The
results are identical to scipy's with ``disk(r)`` (the tests compare them): lattice distances are
square roots of integers, and the comparison allows for the float rounding of the square root.

The transform has a fixed cost of its own, so scipy's morphology is used below
:data:`EDT_FROM_RADIUS` pixels (measured on 1 and 6 Mpx masks: at radius 4 scipy's closing is
2-3x faster, from radius 8 on the transform is, 17x at radius 24 on 6 Mpx). Real slides
segmented at 8 µm/px close over a few pixels; small slides segmented at their own resolution,
over tens.

The transform's float distances and integer feature indices take 16 bytes a pixel, so a large
thumbnail is done a band of rows at a time (:mod:`~wsi_pipeline.tiling.tissue.bands`) with a
halo of ``radius`` rows: no pixel farther than the radius can change a band's result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage import morphology

from wsi_pipeline.tiling.tissue.bands import row_bands

# sqrt of an integer is exact to ~1e-16 relative; the next lattice distance above r is at least
# sqrt(r^2 + 1) - r >= 1/(2r + 1) away, far more than this.
_EPS = 1e-9

#: Radius (pixels) from which the distance transform replaces scipy's binary morphology.
EDT_FROM_RADIUS = 8


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a binary mask by a disk of ``radius`` pixels (outside the image is False).

    Parameters
    ----------
    mask
        (H, W) bool.
    radius
        Disk radius in pixels, >= 0 (0 returns a copy).

    Returns
    -------
    numpy.ndarray
        (H, W) bool; equal to ``ndimage.binary_dilation(mask, morphology.disk(radius))``.
    """

    def within_radius_of_true(block: np.ndarray) -> np.ndarray:
        # Distance of each pixel to the nearest True pixel (0 on True pixels).
        return ndimage.distance_transform_edt(~block) <= radius + _EPS

    return _by_disk(mask, radius, ndimage.binary_dilation, within_radius_of_true)


def erode_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erode a binary mask by a disk of ``radius`` pixels (outside the image is False).

    Parameters
    ----------
    mask
        (H, W) bool.
    radius
        Disk radius in pixels, >= 0 (0 returns a copy).

    Returns
    -------
    numpy.ndarray
        (H, W) bool; equal to ``ndimage.binary_erosion(mask, morphology.disk(radius))``.
    """

    def farther_than_radius_from_false(block: np.ndarray) -> np.ndarray:
        # Outside the block counts as False: one False pixel of padding makes the transform see
        # it. At the image's edges that is the outside; inside the image the padding row lies
        # radius + 1 rows from the band, too far to erode it.
        padded = np.pad(block, 1, constant_values=False)
        return (ndimage.distance_transform_edt(padded) > radius + _EPS)[1:-1, 1:-1]

    return _by_disk(mask, radius, ndimage.binary_erosion, farther_than_radius_from_false)


def _by_disk(
    mask: np.ndarray,
    radius: int,
    morphology_op: Callable[[np.ndarray, np.ndarray], np.ndarray],
    on_block: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """``morphology_op`` with a disk below :data:`EDT_FROM_RADIUS`, else ``on_block`` on bands of rows.

    Each band carries a halo of ``radius`` rows: nothing farther can change its result.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0 or not mask.any():  # an empty mask stays empty under both
        return mask.copy()
    if radius < EDT_FROM_RADIUS:
        return morphology_op(mask, morphology.disk(radius))
    out = np.empty_like(mask)
    for read, keep, rows in row_bands(*mask.shape, halo=radius):
        out[rows] = on_block(mask[read])[keep]
    return out


def close_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Close a binary mask by a disk: dilation then erosion (outside the image is False).

    Parameters
    ----------
    mask
        (H, W) bool.
    radius
        Disk radius in pixels, >= 0 (0 returns a copy).

    Returns
    -------
    numpy.ndarray
        (H, W) bool; equal to ``ndimage.binary_closing(mask, morphology.disk(radius))``.
    """
    return erode_disk(dilate_disk(mask, radius), radius)
