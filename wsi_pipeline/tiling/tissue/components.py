"""Dropping small pieces and filling small holes of a boolean mask, with little memory.

The same results as ``skimage.morphology.remove_small_objects`` / ``remove_small_holes`` with
``max_size`` and 4-connectivity, but with int32 labels and no intermediate copies: on the
15-Mpx thumbnail of a 150,000 x 100,000 px slide that is ~75 MB a call instead of ~200 MB.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 4-connectivity: pixels touching by an edge belong together (scikit-image's default).
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def remove_small_objects(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Return ``mask`` without its connected pieces of ``max_size`` pixels or fewer.

    Parameters
    ----------
    mask
        (H, W) bool.
    max_size
        Pieces this small or smaller are removed.

    Returns
    -------
    numpy.ndarray
        (H, W) bool, a new array.
    """
    labels = np.empty(mask.shape, dtype=np.int32)
    count = ndimage.label(mask, structure=FOUR_CONNECTED, output=labels)
    out = mask.copy()
    if count == 0:
        return out
    small = np.bincount(labels.ravel(), minlength=count + 1) <= max_size
    small[0] = False
    out[small[labels]] = False
    return out


def remove_small_holes(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Return ``mask`` with its holes (background pieces) of ``max_size`` pixels or fewer filled.

    As in scikit-image, any background piece that small counts, including one at the border.
    """
    return ~remove_small_objects(~mask, max_size)
