"""Per-pixel extremes over the colour channels, computed fast.

``rgb.max(axis=-1)`` reduces over a length-3 innermost axis, which numpy does one pixel at a
time; comparing the three channel planes elementwise is several times faster on thumbnails and
tile batches, which is where the tile stage spends its time.
"""

from __future__ import annotations

import numpy as np


def channel_max(rgb: np.ndarray) -> np.ndarray:
    """Return the largest channel of each pixel of an (..., 3) array, same dtype, shape (...)."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def channel_min(rgb: np.ndarray) -> np.ndarray:
    """Return the smallest channel of each pixel of an (..., 3) array, same dtype, shape (...)."""
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
