"""Tissue on brightfield slides (H&E, IHC): optical density against the glass, colour, pen removal.

Stain absorbs light, so tissue is where the optical density OD = -log(I / I0) rises above the
glass; I0 is measured on the glass of the image itself, because scanners set their white point
anywhere from ~220 to 255. Stains are coloured: their OD differs between channels (eosin absorbs
green, haematoxylin red and green, DAB blue and green), whereas black padding, dust, dark debris
and black ink absorb all channels alike. So a tissue pixel needs both enough OD and enough
*colour* in OD (the ratio of its weakest to its strongest channel OD well below 1).

The OD threshold sits just above the glass (its own noise plus a margin), not at an Otsu split
between pale and dark tissue: that keeps faintly stained tissue (a third of the usual OD) and
works on a slide that is all tissue or all pale, where a histogram split has nothing to split.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from wsi_pipeline.tiling.channels import channel_max, channel_min
from wsi_pipeline.tiling.tissue.bands import gaussian_halo, row_bands
from wsi_pipeline.tiling.tissue.components import (
    remove_small_holes,
    remove_small_objects,
)
from wsi_pipeline.tiling.tissue.disk import close_disk, dilate_disk
from wsi_pipeline.tiling.tissue.pen import PEN_DILATION_UM, ink_masks

#: A glass pixel: every channel at least this bright, red and green within `GLASS_MAX_SPREAD` of
#: each other, blue within `GLASS_MAX_TINT` of them (fractions of the brightest channel). Glass is
#: grey but for the colour temperature of the scanner's light or the mounting medium, a tint
#: along the blue-yellow axis; pale eosin is magenta (green below red), so it is not glass.
GLASS_MIN_LEVEL = 150
GLASS_MAX_SPREAD = 0.04
GLASS_MAX_TINT = 0.12
#: Glass must cover this fraction of the image for I0 to be measured; else a white light is assumed.
GLASS_MIN_FRACTION = 0.01
#: Bounds of the OD threshold: above typical glass noise and JPEG ringing, below faint stain.
OD_THRESHOLD_BOUNDS = (0.03, 0.10)
#: Margin added to the spread of the glass's OD (uneven illumination, dust haze).
OD_MARGIN = 0.02
#: Minimum colour in OD, 1 - min(OD) / max(OD): stains are >= ~0.25 (DAB plus haematoxylin is the
#: greyest), black or grey things <= ~0.1.
MIN_OD_CHROMA = 0.15
#: Whole-image statistics are measured on a regular subsample of at most this many pixels.
STATS_PIXELS = 1 << 21
#: Gaps this wide (µm) between stained structures are closed: nuclei and stroma form one piece.
CLOSING_UM = 8.0
#: OD is smoothed with this sigma (µm) so a fine thumbnail is read as tissue, not as single nuclei.
SMOOTHING_UM = 2.0


def glass_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels that look like bare glass: bright in every channel, and grey.

    Parameters
    ----------
    rgb
        (..., 3) uint8 image(s): a thumbnail, or a batch of tiles.

    Returns
    -------
    numpy.ndarray
        (...) bool. Very pale tissue can pass too, so statistics over these pixels must be robust.
    """
    red, green, blue = (rgb[..., channel].astype(np.int16) for channel in range(3))
    high = channel_max(rgb)
    return (
        (channel_min(rgb) >= GLASS_MIN_LEVEL)
        & (np.abs(red - green) <= GLASS_MAX_SPREAD * high)
        & (np.abs(2 * blue - red - green) <= 2 * GLASS_MAX_TINT * high)
    )


def glass_intensity(rgb: np.ndarray) -> np.ndarray:
    """Estimate the light through bare glass (I0) per channel.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 image.

    Returns
    -------
    numpy.ndarray
        float64 (3,): the median RGB of `glass_pixels`, or 255 in every channel when fewer than
        `GLASS_MIN_FRACTION` of the pixels look like glass (a slide that is all tissue).
    """
    glass = glass_pixels(rgb)
    if glass.mean() < GLASS_MIN_FRACTION:
        return np.full(3, 255.0)
    return np.median(rgb[glass], axis=0).astype(np.float64)


def optical_density(rgb: np.ndarray, i0: np.ndarray) -> np.ndarray:
    """Per-channel optical density -log(I / I0), clipped at 0 (brighter than glass is glass).

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 image.
    i0
        (3,) light through glass, from `glass_intensity`.

    Returns
    -------
    numpy.ndarray
        float32 (H, W, 3).
    """
    od = np.log(np.asarray(i0, dtype=np.float32)) - np.log(np.maximum(rgb, 1).astype(np.float32))
    return np.maximum(od, 0.0, out=od)


def od_threshold(glass_od: np.ndarray) -> float:
    """OD above which a pixel may be tissue: just above the spread of the glass, bounded.

    The spread is measured robustly (median plus four MAD-standard deviations) because the
    glass-looking pixels include some pale tissue, which must not raise the threshold.

    Parameters
    ----------
    glass_od
        Strongest-channel OD of pixels that look like glass (any shape; a sample is enough).

    Returns
    -------
    float
        A threshold within `OD_THRESHOLD_BOUNDS`.
    """
    noise = 0.0
    if glass_od.size:
        median = float(np.median(glass_od))
        noise = median + 4.0 * 1.4826 * float(np.median(np.abs(glass_od - median)))
    low, high = OD_THRESHOLD_BOUNDS
    return float(np.clip(noise + OD_MARGIN, low, high))


def stats_stride(height: int, width: int, pixels: int = STATS_PIXELS) -> int:
    """Step of the regular subsample on which whole-image statistics are measured."""
    return max(1, math.ceil(math.sqrt(height * width / pixels)))


def scanner_padding(black: np.ndarray, min_fill: float = 0.9) -> np.ndarray:
    """The parts of a black mask that are scanner padding: bands and blocks along the image edge.

    A scanner fills what lies outside its scan area with black: whole rows or columns along an
    edge, or a solid block in a corner. A black pen stroke running off the image (or into a
    band) is a thin curve, which fills neither a row nor its own bounding box.

    Parameters
    ----------
    black
        (H, W) bool, dark pixels (``ink_masks(...)["black"]``).
    min_fill
        A row or column from the edge inwards is padding while at least this fraction of it is
        black; a remaining component touching the edge is padding when it covers at least this
        fraction of its bounding box.

    Returns
    -------
    numpy.ndarray
        (H, W) bool.
    """
    padding = np.zeros_like(black)
    if not black.any():
        return padding
    rows, cols = black.mean(axis=1) >= min_fill, black.mean(axis=0) >= min_fill
    for lines, axis in ((rows, 0), (cols, 1)):
        for ordered, from_end in ((lines, False), (lines[::-1], True)):
            depth = int(np.argmin(ordered)) if not ordered.all() else ordered.size
            if depth:
                band = slice(ordered.size - depth, None) if from_end else slice(0, depth)
                if axis == 0:
                    padding[band] = black[band]
                else:
                    padding[:, band] = black[:, band]
    labels, _ = ndimage.label(black & ~padding)
    edge = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist()) - {0}
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if index in edge and box is not None:
            component = labels[box] == index
            if component.mean() >= min_fill:
                padding[box] |= component
    return padding


def clean_mask(
    mask: np.ndarray, mpp: float, *, closing_um: float, min_object_um2: float, max_hole_um2: float
) -> np.ndarray:
    """Close small gaps, drop small pieces, fill small holes; every size physical.

    Parameters
    ----------
    mask
        (H, W) bool.
    mpp
        µm per pixel.
    closing_um
        Radius (µm) of the closing that joins nearby structures; 0 skips it.
    min_object_um2
        Pieces this small (µm²) or smaller are dropped.
    max_hole_um2
        Holes this small (µm²) or smaller are filled.

    Returns
    -------
    numpy.ndarray
        (H, W) bool.
    """
    radius = round(closing_um / mpp)
    if radius >= 1:
        # Pad with the edge values: a closing treats the outside as background, which would
        # erode tissue that runs off the image edge (a crop of a slide, a region scan).
        padded = np.pad(mask, radius, mode="edge")
        mask = close_disk(padded, radius)[radius:-radius, radius:-radius]
    px_area = mpp * mpp
    mask = remove_small_objects(mask, max_size=max(1, round(min_object_um2 / px_area)))
    return remove_small_holes(mask, max_size=max(1, round(max_hole_um2 / px_area)))


def brightfield_masks(
    rgb: np.ndarray,
    mpp: float,
    *,
    min_object_um2: float = 20000.0,
    max_hole_um2: float = 20000.0,
    remove_pen: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment tissue and pen ink in a brightfield thumbnail.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 thumbnail.
    mpp
        µm per thumbnail pixel; every size below is physical.
    min_object_um2
        Tissue pieces smaller than this area (µm²) are dropped.
    max_hole_um2
        Holes in tissue smaller than this area (µm²) are filled (pen ink is cut out again after).
    remove_pen
        Find blue, green and black marker ink and exclude it from tissue. When False, ink is
        not looked for (the pen mask is all False); black and grey things are still excluded.

    Returns
    -------
    tissue : numpy.ndarray
        (H, W) bool, True on tissue; glass, black padding, grey/black debris and ink excluded.
    pen : numpy.ndarray
        (H, W) bool, True on pen ink (grown by `PEN_DILATION_UM`), black padding left out.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    height, width = rgb.shape[:2]
    # Whole-image statistics (the glass's colour and noise) come from a regular subsample; the
    # per-pixel tests run a band of rows at a time, so no float image of a large thumbnail is
    # ever whole (see `bands`).
    stride = stats_stride(height, width)
    i0 = glass_intensity(rgb[::stride, ::stride])
    sigma = SMOOTHING_UM / mpp if SMOOTHING_UM / mpp >= 0.5 else 0.0
    halo = gaussian_halo(sigma)

    def od_extremes(read: slice, keep: slice) -> tuple[np.ndarray, np.ndarray]:
        od = optical_density(rgb[read], i0)
        if sigma:
            od = ndimage.gaussian_filter(od, sigma=(sigma, sigma, 0))
        return channel_max(od)[keep], channel_min(od)[keep]

    bands = list(row_bands(height, width, halo))
    glass_od = []
    kept: tuple[np.ndarray, np.ndarray] | None = None
    for read, keep, out in bands:
        extremes = od_extremes(read, keep)
        glass = glass_pixels(rgb[out][::stride, ::stride])
        glass_od.append(extremes[0][::stride, ::stride][glass])
        if len(bands) == 1:  # a small image: the second pass reuses it instead of smoothing again
            kept = extremes
    threshold = od_threshold(np.concatenate(glass_od))
    stained = np.zeros((height, width), dtype=bool)
    for read, keep, out in bands:
        od_max, od_min = kept if kept is not None else od_extremes(read, keep)
        chroma = 1.0 - od_min / np.maximum(od_max, 1e-6)
        stained[out] = (od_max > threshold) & (chroma >= MIN_OD_CHROMA)

    inks = ink_masks(rgb, mpp)
    padding = scanner_padding(inks["black"])
    grow = max(1, round(PEN_DILATION_UM / mpp))

    def grown(mask: np.ndarray) -> np.ndarray:
        return dilate_disk(mask, grow)

    # Black padding and very dark debris are never tissue, pen removal asked for or not; the
    # padding is not reported as pen either (it would count as ink area in the QC).
    excluded = grown(inks["black"])
    if remove_pen:
        pen = grown(inks["blue"] | inks["green"] | (inks["black"] & ~padding)) & ~padding
        excluded |= pen
    else:
        pen = np.zeros(rgb.shape[:2], dtype=bool)

    tissue = clean_mask(
        stained & ~excluded, mpp, closing_um=CLOSING_UM, min_object_um2=min_object_um2, max_hole_um2=max_hole_um2
    )
    # Filling holes and closing may have reached into ink or padding: cut it out again, then
    # drop the slivers that leaves along stroke edges.
    tissue &= ~excluded
    tissue = remove_small_objects(tissue, max_size=max(1, round(min_object_um2 / (mpp * mpp))))
    return tissue, pen
