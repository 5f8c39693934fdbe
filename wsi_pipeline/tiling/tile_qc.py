"""Per-tile quality measured on the tile's own pixels: background fraction and blur score."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.tiling.channels import channel_max
from wsi_pipeline.tiling.tissue.brightfield import glass_pixels

#: Background of a fluorescence tile: pixels darker than this (of 255). Lower than the
#: fluorescence method's `DARK_LEVEL`, which judges smoothed thumbnails: at tile scale the dim
#: space between nuclei is tissue, not background.
FLUORESCENCE_BACKGROUND_LEVEL = 31
#: Below this fraction of non-background pixels the blur score uses the whole tile (a nearly
#: empty tile has no tissue to judge focus on).
MIN_TISSUE_FOR_BLUR = 0.05
#: ITU-R BT.601 luma weights: the usual grey for focus measures.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def background_pixels(tiles: np.ndarray, modality: str = "brightfield") -> np.ndarray:
    """Return which pixels of each tile are background, by the tissue segmentation's own rules.

    Parameters
    ----------
    tiles
        (B, H, W, 3) uint8 RGB.
    modality
        ``"brightfield"``: background is glass (or white padding) as `glass_pixels` sees it;
        ``"fluorescence"``: background is dark, below `FLUORESCENCE_BACKGROUND_LEVEL`.

    Returns
    -------
    numpy.ndarray
        (B, H, W) bool.
    """
    if modality == "fluorescence":
        return channel_max(tiles) < FLUORESCENCE_BACKGROUND_LEVEL
    return glass_pixels(tiles)


def laplacian_variance(tiles: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Return each tile's blur score: the variance of the Laplacian of its grey levels.

    A sharp image has strong second derivatives at edges (nuclei, fibres); an out-of-focus one
    has few, so the variance of the Laplacian falls. Computed on grey levels 0-255 with the
    4-neighbour kernel ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` over interior pixels, and only
    where the tile is not background, so glass does not make a sharp tile look blurred.

    Parameters
    ----------
    tiles
        (B, H, W, 3) uint8 RGB, each at least 3 x 3.
    background
        (B, H, W) bool background pixels to leave out; None uses every pixel.

    Returns
    -------
    numpy.ndarray
        (B,) float32, larger is sharper.
    """
    grey = tiles.astype(np.float32) @ LUMA
    lap = (
        grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4.0 * grey[:, 1:-1, 1:-1]
    )
    scores = np.empty(len(tiles), dtype=np.float32)
    for i, values in enumerate(lap):
        if background is not None:
            keep = ~background[i, 1:-1, 1:-1]
            if keep.mean() >= MIN_TISSUE_FOR_BLUR:
                values = values[keep]
        scores[i] = float(np.var(values, dtype=np.float64))
    return scores
