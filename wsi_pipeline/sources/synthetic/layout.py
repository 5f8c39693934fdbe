"""Where things are on a synthetic slide: tissue pieces, tumour nests and lymphocyte clusters.

All regions are decided on the truth grid (one cell = `MASK_DOWNSAMPLE` level-0 pixels), which
is also the resolution of the returned truth masks. The tissue outline is kept as a continuous
potential (tissue where > 0) so the renderer can resample it to a smooth level-0 edge that agrees
with the grid mask at every cell centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fields import smooth_noise

#: Tissue covers a fraction drawn from this range of the slide (before tiny specks are removed).
TISSUE_FRACTION_RANGE = (0.30, 0.45)
#: Width of the channel kept between neighbouring tissue pieces, in units of the piece potential.
PIECE_GAP = 0.12
#: Tumour nests cover about this fraction of the tissue outside lymphocyte clusters.
NEST_FRACTION = 0.4


@dataclass
class SlideLayout:
    """Regions of one slide on the truth grid.

    Attributes
    ----------
    tissue_potential
        float32; tissue where > 0. Resample it bilinearly for the level-0 outline.
    tissue, signal, nest
        Boolean masks: tissue, lymphocyte clusters (class signal), tumour nests (epithelium).
        ``signal`` and ``nest`` are disjoint subsets of ``tissue``.
    """

    tissue_potential: np.ndarray
    tissue: np.ndarray
    signal: np.ndarray
    nest: np.ndarray


def _piece_centres(
    rng: np.random.Generator, n: int, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Centres of ``n`` tissue pieces on a jittered grid, so pieces rarely merge; returns cell size too."""
    rows, cols = shape
    n_cols = math.ceil(math.sqrt(n * cols / rows))
    n_rows = math.ceil(n / n_cols)
    chosen = rng.choice(n_rows * n_cols, size=n, replace=False)
    cell_h, cell_w = rows / n_rows, cols / n_cols
    jitter = rng.uniform(-0.12, 0.12, size=(n, 2))
    cy = (chosen // n_cols + 0.5 + jitter[:, 0]) * cell_h
    cx = (chosen % n_cols + 0.5 + jitter[:, 1]) * cell_w
    return cy, cx, min(cell_h, cell_w)


def _tissue_potential(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Union of 3-6 noise-deformed ellipses as a potential, zero at a randomly drawn coverage."""
    rows, cols = shape
    n = int(rng.integers(3, 7))
    cy, cx, cell = _piece_centres(rng, n, shape)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    # Two scales of deformation: lobes (coarse) and a ragged edge (fine).
    coarse = smooth_noise(rng, shape, max(1.0, cell / 6))
    fine = smooth_noise(rng, shape, max(1.0, cell / 40))
    deform = np.exp(0.22 * coarse + 0.06 * fine)
    best = np.full(shape, -np.inf, dtype=np.float32)
    second = np.full(shape, -np.inf, dtype=np.float32)
    for i in range(n):
        a = cell * rng.uniform(0.36, 0.48)
        b = a * rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, math.pi)
        dy, dx = yy - cy[i], xx - cx[i]
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        piece = 1.0 - np.sqrt((along / a) ** 2 + (across / b) ** 2) * deform
        second = np.maximum(second, np.minimum(best, piece))
        best = np.maximum(best, piece)
    # Keep a clear margin at the slide border, like a real section placed on glass.
    margin = max(2.0, 0.04 * min(rows, cols))
    to_border = np.minimum.reduce([yy, xx, rows - 1 - yy, cols - 1 - xx])
    best -= np.clip((margin - to_border) / margin, 0.0, 1.0) * 2.0
    target = rng.uniform(*TISSUE_FRACTION_RANGE)
    # The threshold is clipped so a pathological draw changes the coverage, not the shapes.
    threshold = float(np.clip(np.quantile(best, 1.0 - target), -0.5, 0.45))
    # Where two pieces come close, cut a channel along their midline so they stay separate
    # pieces (a section has 3-6 fragments, not one merged blob).
    potential = np.minimum(best - threshold, best - second - PIECE_GAP)
    # Drop specks smaller than 1% of the slide: real tissue pieces are not that small.
    labels, n_labels = ndimage.label(potential > 0)
    if n_labels > 1:
        sizes = np.bincount(labels.ravel())
        small = sizes < 0.01 * rows * cols
        small[0] = False
        potential[small[labels]] = -0.5
    return potential.astype(np.float32)


def _signal_mask(rng: np.random.Generator, tissue: np.ndarray, fraction: float) -> np.ndarray:
    """A few irregular blobs inside the tissue covering ``fraction`` of its cells."""
    n_tissue = int(tissue.sum())
    n_target = round(fraction * n_tissue)
    if n_target == 0:
        return np.zeros_like(tissue)
    depth = ndimage.distance_transform_edt(tissue)
    # Prefer centres deep inside the tissue so clusters are not cut off by the edge.
    weight = (depth**2).ravel()
    k = int(rng.integers(2, 5))
    centres = rng.choice(tissue.size, size=k, p=weight / weight.sum())
    shares = rng.dirichlet(np.full(k, 3.0))
    radii = np.sqrt(n_target * shares / math.pi)
    rows, cols = tissue.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    wobble = np.exp(0.2 * smooth_noise(rng, tissue.shape, max(1.0, float(radii.mean()) / 2)))
    potential = np.full(tissue.shape, -np.inf, dtype=np.float32)
    for centre, radius in zip(centres, radii):
        dist = np.hypot(yy - centre // cols, xx - centre % cols)
        np.maximum(potential, 1.0 - dist * wobble / max(radius, 0.5), out=potential)
    # Rank tissue cells by potential and take exactly the target count (ties broken by position).
    order = np.argsort(-potential[tissue], kind="stable")
    inside = np.zeros(n_tissue, dtype=bool)
    inside[order[:n_target]] = True
    signal = np.zeros_like(tissue)
    signal[tissue] = inside
    return signal


def _nest_mask(
    rng: np.random.Generator, tissue: np.ndarray, signal: np.ndarray, cell_um: float
) -> np.ndarray:
    """Tumour nests: smooth-noise islands (~100 µm) over `NEST_FRACTION` of the free tissue."""
    free = tissue & ~signal
    if not free.any():
        return np.zeros_like(tissue)
    field = smooth_noise(rng, tissue.shape, max(1.0, 40.0 / cell_um))
    threshold = np.quantile(field[free], 1.0 - NEST_FRACTION)
    return free & (field > threshold)


def make_layout(
    rng: np.random.Generator,
    grid_shape: tuple[int, int],
    cell_um: float,
    positive: bool,
    signal_fraction: float,
) -> SlideLayout:
    """Draw the regions of one slide.

    Parameters
    ----------
    rng
        Source of randomness.
    grid_shape
        Truth-grid shape (rows, cols).
    cell_um
        Size of one grid cell in µm.
    positive
        Whether to place lymphocyte clusters.
    signal_fraction
        Fraction of tissue cells the clusters cover when ``positive``.

    Returns
    -------
    SlideLayout
    """
    potential = _tissue_potential(rng, grid_shape)
    tissue = potential > 0
    signal = _signal_mask(rng, tissue, signal_fraction) if positive else np.zeros_like(tissue)
    nest = _nest_mask(rng, tissue, signal, cell_um)
    return SlideLayout(tissue_potential=potential, tissue=tissue, signal=signal, nest=nest)
