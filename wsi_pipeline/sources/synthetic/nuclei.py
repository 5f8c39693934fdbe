"""Nuclei: kinds in physical units, where they fall, and stamping them into a haematoxylin map.

A slide holds thousands of nuclei, so no Python loop runs per nucleus: each kind gets a small
bank of pre-drawn stamp shapes, and all nuclei sharing a stamp are written in one vectorised
``np.maximum.at`` (max, not sum, so overlapping nuclei do not turn black, and the result does not
depend on the order of writes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Stamp shapes drawn per nucleus kind and slide; nuclei pick one at random.
N_STAMP_VARIANTS = 12


@dataclass(frozen=True)
class NucleusKind:
    """A population of nuclei, in µm.

    Attributes
    ----------
    length_um, width_um
        Ranges of the long and short diameters.
    intensity
        Range of haematoxylin concentration at the nucleus (optical density units of the stain).
    rim
        Relative darkening towards the membrane (0 = flat; vesicular tumour nuclei have a rim).
    """

    length_um: tuple[float, float]
    width_um: tuple[float, float]
    intensity: tuple[float, float]
    rim: float = 0.0


#: Epithelial / tumour nuclei: large, pale, vesicular.
TUMOUR = NucleusKind(length_um=(9.0, 14.0), width_um=(7.5, 11.0), intensity=(0.75, 1.2), rim=0.35)
#: Stromal fibroblasts: thin and elongated.
FIBROBLAST = NucleusKind(length_um=(9.0, 14.0), width_um=(2.5, 3.5), intensity=(1.0, 1.4))
#: Lymphocytes: small, round, dense chromatin (the class signal when clustered).
LYMPHOCYTE = NucleusKind(length_um=(5.5, 7.0), width_um=(5.0, 6.5), intensity=(2.0, 2.6))


@dataclass
class Stamp:
    """One nucleus shape: flat-index offsets (relative to the centre) and values in [0, 1]."""

    dy: np.ndarray
    dx: np.ndarray
    values: np.ndarray
    radius: int


def make_stamp(length_px: float, width_px: float, angle: float, rim: float) -> Stamp:
    """Rasterise an ellipse with an anti-aliased edge and an optional darker rim.

    Parameters
    ----------
    length_px, width_px
        Long and short diameters in level-0 pixels.
    angle
        Orientation of the long axis in radians.
    rim
        Relative darkening at the edge (0 = uniform).

    Returns
    -------
    Stamp
    """
    a = max(length_px, 1.0) / 2
    b = max(width_px, 1.0) / 2
    radius = math.ceil(a) + 1
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    across = -xx * math.sin(angle) + yy * math.cos(angle)
    r = np.sqrt((along / a) ** 2 + (across / b) ** 2)
    # Distance to the edge in pixels along the short axis, clipped to a one-pixel ramp.
    coverage = np.clip((1.0 - r) * b + 0.5, 0.0, 1.0)
    values = coverage * (1.0 - rim + rim * np.minimum(r, 1.0) ** 2)
    keep = values > 0.02
    return Stamp(dy=yy[keep].astype(np.intp), dx=xx[keep].astype(np.intp), values=values[keep], radius=radius)


def make_stamp_bank(
    rng: np.random.Generator, kind: NucleusKind, mpp: float, n: int = N_STAMP_VARIANTS
) -> list[Stamp]:
    """Draw ``n`` shapes of ``kind`` at ``mpp`` µm per pixel."""
    bank = []
    for _ in range(n):
        length = rng.uniform(*kind.length_um) / mpp
        width = min(rng.uniform(*kind.width_um) / mpp, length)
        bank.append(make_stamp(length, width, rng.uniform(0, math.pi), kind.rim))
    return bank


def sample_centres(
    rng: np.random.Generator, expected_per_cell: np.ndarray, cell_px: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson points with a per-cell density, as level-0 pixel coordinates.

    Parameters
    ----------
    rng
        Source of randomness.
    expected_per_cell
        Expected number of points in each truth-grid cell.
    cell_px
        Level-0 pixels per cell.
    height, width
        Level-0 size; points beyond it (in the last partial cells) are dropped.

    Returns
    -------
    tuple of numpy.ndarray
        ``(y, x)`` integer pixel coordinates.
    """
    counts = rng.poisson(expected_per_cell).ravel()
    cells = np.repeat(np.arange(counts.size), counts)
    cols = expected_per_cell.shape[1]
    offsets = rng.random((cells.size, 2))
    y = ((cells // cols) + offsets[:, 0]) * cell_px
    x = ((cells % cols) + offsets[:, 1]) * cell_px
    y = y.astype(np.intp)
    x = x.astype(np.intp)
    inside = (y < height) & (x < width)
    return y[inside], x[inside]


def stamp_nuclei(
    canvas: np.ndarray,
    rng: np.random.Generator,
    bank: list[Stamp],
    y: np.ndarray,
    x: np.ndarray,
    intensity: tuple[float, float],
) -> None:
    """Write nuclei into a haematoxylin map in place, keeping the maximum where they overlap.

    Parameters
    ----------
    canvas
        C-contiguous float32 (H, W) map.
    rng
        Source of randomness (stamp choice and per-nucleus intensity).
    bank
        Stamp shapes to choose from.
    y, x
        Level-0 centres. Nuclei that would cross the border are dropped.
    intensity
        Range of peak concentration.
    """
    height, width = canvas.shape
    flat = canvas.reshape(-1)  # a view: canvas is contiguous
    choice = rng.integers(0, len(bank), size=y.size)
    peak = rng.uniform(*intensity, size=y.size).astype(np.float32)
    for index, stamp in enumerate(bank):
        r = stamp.radius
        sel = (choice == index) & (y >= r) & (y < height - r) & (x >= r) & (x < width - r)
        if not sel.any():
            continue
        centre = y[sel] * width + x[sel]
        offsets = stamp.dy * width + stamp.dx
        target = (centre[:, None] + offsets[None, :]).ravel()
        values = (peak[sel][:, None] * stamp.values[None, :]).ravel()
        np.maximum.at(flat, target, values)
