"""Marker-pen ink on brightfield slides: blue, green and black strokes drawn on the glass.

Pathologists circle regions with felt-tip markers; the ink sits on the coverslip, over glass and
tissue alike, and must not be taken for tissue. Its colours are unlike any stain:

- blue ink is a saturated, fairly dark pure blue (hue ~190-245°), where haematoxylin is purple
  (hue ~250-300° once mixed with eosin), dense haematoxylin alone ~245°, and an IHC
  counterstain a pale, unsaturated blue;
- green ink is green to cyan (hue ~70-180°) with real saturation: H&E and IHC stains are never
  green;
- black ink (and black scanner padding, dark debris) is near black, or dark and grey; dense
  haematoxylin is dark too, but purple, and never near black at thumbnail scale.

Ink over tissue multiplies the two colours and drifts towards purple or grey, so each colour
has a strict test (seeds) and a looser one, accepted only where it touches a seed: the stroke
keeps its over-tissue parts without the loose test firing on stained tissue elsewhere.

Strokes are wide (a felt tip draws lines of 0.2-1 mm), so on a fine thumbnail colours are read
after smoothing to about `INK_SCALE_UM`, where nuclei and fibres have blended into their
surroundings and only something as large as ink keeps an ink colour.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import color, morphology

#: Ink colours, in the order `ink_masks` returns them.
INK_COLOURS = ("blue", "green", "black")
#: Ink edges blend into tissue and glass over a few µm; the union is grown by this much.
PEN_DILATION_UM = 12.0
#: Colours are judged at about this resolution (µm): finer thumbnails are smoothed to it first.
INK_SCALE_UM = 8.0
#: Ink patches smaller than this (µm²) are dropped: specks of a colour are not pen strokes.
MIN_INK_UM2 = 3000.0


def _hsv(rgb: np.ndarray, mpp: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value in [0, 1], of ``rgb`` smoothed to `INK_SCALE_UM`."""
    image = rgb.astype(np.float32) / np.float32(255.0)
    if mpp is not None:
        # A Gaussian of sigma ~ half a pixel of the coarser scale approximates reading it there.
        sigma = 0.5 * INK_SCALE_UM / mpp
        if sigma >= 0.5:
            image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    hsv = color.rgb2hsv(image)
    return hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]


def _grow_into(seeds: np.ndarray, loose: np.ndarray) -> np.ndarray:
    """Connected parts of ``loose | seeds`` that hold at least one seed pixel."""
    candidates = loose | seeds
    labels, n = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return seeds.copy()
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    return keep[labels]


def ink_masks(rgb: np.ndarray, mpp: float | None = None) -> dict[str, np.ndarray]:
    """Find blue, green and black marker ink in an RGB image, each colour separately.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 image (a slide thumbnail).
    mpp
        µm per pixel of ``rgb``. When given, a thumbnail finer than `INK_SCALE_UM` is smoothed
        to it first and patches smaller than `MIN_INK_UM2` are dropped; when ``None`` every
        pixel is judged as it is (small test arrays).

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"blue": ..., "green": ..., "black": ...}``, each an (H, W) bool mask, undilated.
        ``"black"`` also holds black scanner padding and dark grey debris: anything that dark
        is not tissue either.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    hue, sat, val = _hsv(rgb, mpp)

    # Blue: seeds are the pure blue of ink (green above red: hue below 235°); haematoxylin
    # without eosin (an IHC counterstain) reaches ~245°, so only the loose test, grown from
    # seeds, goes there: it follows ink over haematoxylin and the navy where ink crosses tissue.
    blue_seed = (hue >= 190) & (hue <= 235) & (sat >= 0.35) & (val <= 0.9)
    blue_loose = (hue >= 180) & (hue <= 250) & (sat >= 0.25) & (val <= 0.9)
    # Green: over eosin the ink turns grey-green and over haematoxylin teal, hence the wider
    # and less saturated loose range.
    green_seed = (hue >= 70) & (hue <= 180) & (sat >= 0.2) & (val <= 0.9)
    green_loose = (hue >= 60) & (hue <= 205) & (sat >= 0.12) & (val <= 0.9)
    # Black: near black whatever the tint (dense ink over pink tissue keeps a little colour),
    # or dark and grey (thinner ink over glass, padding, debris). Dense haematoxylin can be as
    # dark as 0.25 but stays saturated purple, so the tinted case is limited to near black.
    black_seed = (val <= 0.15) | ((val <= 0.4) & (sat <= 0.25))
    black_loose = (val <= 0.2) | ((val <= 0.5) & (sat <= 0.3))
    masks = {
        "blue": _grow_into(blue_seed, blue_loose),
        "green": _grow_into(green_seed, green_loose),
        "black": _grow_into(black_seed, black_loose),
    }
    if mpp is not None:
        min_size = max(1, round(MIN_INK_UM2 / (mpp * mpp)))
        masks = {name: morphology.remove_small_objects(mask, max_size=min_size) for name, mask in masks.items()}
    return masks


def pen_mask(rgb: np.ndarray, mpp: float | None = None, dilation_um: float = PEN_DILATION_UM) -> np.ndarray:
    """Pen ink of any colour, grown a little to cover stroke edges blended into the background.

    Parameters
    ----------
    rgb
        (H, W, 3) uint8 image.
    mpp
        µm per pixel of ``rgb``, to turn ``dilation_um`` into pixels; ``None`` grows by one pixel.
    dilation_um
        How far the union of ink masks is grown, in µm.

    Returns
    -------
    numpy.ndarray
        (H, W) bool, True on ink.
    """
    masks = ink_masks(rgb, mpp)
    union = masks["blue"] | masks["green"] | masks["black"]
    radius = 1 if mpp is None else max(1, round(dilation_um / mpp))
    return ndimage.binary_dilation(union, morphology.disk(radius)) if union.any() else union
