"""Smooth random fields and their bilinear resampling onto level-0 pixels.

Everything that varies slowly (tissue outline, cluster placement, stain intensity, fibre texture)
is drawn on a coarse grid and only resampled at level 0, one strip of rows at a time: drawing it at
full resolution would cost seconds per slide for no visible difference.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit standard deviation.

    Parameters
    ----------
    rng
        Source of randomness.
    shape
        Output shape (rows, cols).
    sigma
        Gaussian sigma in grid cells (one value or one per axis); sets the feature size.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``.
    """
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect")
    std = float(field.std())
    field -= field.mean()
    if std > 0:
        field /= std
    return field


def _axis_weights(
    n_out: int, start: int, n_in: int, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of output pixels ``start .. start+n_out`` along one axis.

    ``scale`` is source cells per output pixel. Source cell ``j`` is centred on output coordinate
    ``(j + 0.5) / scale``, so a coarse value sits on the centre of the block it stands for.
    """
    u = (np.arange(start, start + n_out, dtype=np.float64) + 0.5) * scale - 0.5
    np.clip(u, 0.0, n_in - 1, out=u)
    i0 = np.floor(u).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = (u - i0).astype(np.float32)
    return i0, i1, t


def resample_rows(field: np.ndarray, row_start: int, n_rows: int, width: int, scale: float) -> np.ndarray:
    """Bilinearly resample a coarse field onto a strip of level-0 rows.

    Parameters
    ----------
    field
        Coarse 2-D float32 field.
    row_start, n_rows
        The level-0 rows wanted.
    width
        Level-0 width.
    scale
        Coarse cells per level-0 pixel (e.g. ``1/16``).

    Returns
    -------
    numpy.ndarray
        float32 array (n_rows, width).
    """
    r0, r1, tr = _axis_weights(n_rows, row_start, field.shape[0], scale)
    c0, c1, tc = _axis_weights(width, 0, field.shape[1], scale)
    # Interpolate along rows first, on the coarse columns (cheap), then along columns.
    rows = field[r0] + (field[r1] - field[r0]) * tr[:, None]
    left = rows[:, c0]
    return left + (rows[:, c1] - left) * tc[None, :]


def sample_points(field: np.ndarray, y: np.ndarray, x: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear value of a coarse field at level-0 pixels ``(y, x)``, consistent with `resample_rows`."""
    n_rows, n_cols = field.shape
    u = np.clip((y + 0.5) * scale - 0.5, 0.0, n_rows - 1)
    v = np.clip((x + 0.5) * scale - 0.5, 0.0, n_cols - 1)
    i0 = np.floor(u).astype(np.intp)
    j0 = np.floor(v).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_rows - 1)
    j1 = np.minimum(j0 + 1, n_cols - 1)
    tu = (u - i0).astype(np.float32)
    tv = (v - j0).astype(np.float32)
    top = field[i0, j0] + (field[i0, j1] - field[i0, j0]) * tv
    bottom = field[i1, j0] + (field[i1, j1] - field[i1, j0]) * tv
    return top + (bottom - top) * tu


def resize_bilinear(field: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Resample a coarse field onto another (coarse) grid, ``scale`` source cells per target cell."""
    return resample_rows(field, 0, shape[0], shape[1], scale)
