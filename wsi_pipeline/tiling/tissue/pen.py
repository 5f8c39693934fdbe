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

from wsi_pipeline.tiling.channels import channel_max, channel_min
from wsi_pipeline.tiling.tissue.bands import gaussian_halo, row_bands
from wsi_pipeline.tiling.tissue.components import remove_small_objects
from wsi_pipeline.tiling.tissue.disk import dilate_disk

#: Ink colours, in the order `ink_masks` returns them.
INK_COLOURS = ("blue", "green", "black")
#: Ink edges blend into tissue and glass over a few µm; the union is grown by this much.
PEN_DILATION_UM = 12.0
#: Colours are judged at about this resolution (µm): finer thumbnails are smoothed to it first.
INK_SCALE_UM = 8.0
#: Ink patches smaller than this (µm²) are dropped: specks of a colour are not pen strokes.
MIN_INK_UM2 = 3000.0


def _smoothing_sigma(mpp: float | None) -> float:
    """Gaussian sigma (px) that reads a thumbnail at ``mpp`` as if at `INK_SCALE_UM`; 0 for none."""
    if mpp is None:
        return 0.0
    sigma = 0.5 * INK_SCALE_UM / mpp
    return sigma if sigma >= 0.5 else 0.0


# Each ink colour has a strict test (seeds) and a loose one, grown from seeds (see the module
# docstring); hue in degrees, saturation and value in [0, 1].
_INK_TESTS = {
    # Blue: seeds are the pure blue of ink (green above red: hue below 235°); haematoxylin
    # without eosin (an IHC counterstain) reaches ~245°, so only the loose test, grown from
    # seeds, goes there: it follows ink over haematoxylin and the navy where ink crosses tissue.
    "blue_seed": lambda h, s, v: (h >= 190) & (h <= 235) & (s >= 0.35) & (v <= 0.9),
    "blue_loose": lambda h, s, v: (h >= 180) & (h <= 250) & (s >= 0.25) & (v <= 0.9),
    # Green: over eosin the ink turns grey-green and over haematoxylin teal, hence the wider
    # and less saturated loose range.
    "green_seed": lambda h, s, v: (h >= 70) & (h <= 180) & (s >= 0.2) & (v <= 0.9),
    "green_loose": lambda h, s, v: (h >= 60) & (h <= 205) & (s >= 0.12) & (v <= 0.9),
    # Black: near black whatever the tint (dense ink over pink tissue keeps a little colour),
    # or dark and grey (thinner ink over glass, padding, debris). Dense haematoxylin can be as
    # dark as 0.25 but stays saturated purple, so the tinted case is limited to near black.
    "black_seed": lambda h, s, v: (v <= 0.15) | ((v <= 0.4) & (s <= 0.25)),
    "black_loose": lambda h, s, v: (v <= 0.2) | ((v <= 0.5) & (s <= 0.3)),
}


def _hsv(rgb: np.ndarray, mpp: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value in [0, 1], of ``rgb`` smoothed to `INK_SCALE_UM`."""
    image = rgb.astype(np.float32) / np.float32(255.0)
    # A Gaussian of sigma ~ half a pixel of the coarser scale approximates reading it there.
    sigma = _smoothing_sigma(mpp)
    if sigma:
        image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    return hsv_planes(image)


def hsv_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation and value of an (H, W, 3) float image in [0, 1], as float32 planes.

    The same definition as ``skimage.color.rgb2hsv`` (hue 0 for greys; on ties blue wins over
    green over red), computed on channel planes in float32, several times faster and lighter
    than a float64 conversion of the whole image.
    """
    red, green, blue = (image[..., channel].astype(np.float32, copy=False) for channel in range(3))
    value = channel_max(image).astype(np.float32, copy=False)
    delta = value - channel_min(image)
    grey = delta == 0
    safe = np.where(grey, np.float32(1.0), delta)
    hue = np.where(
        blue == value, 4.0 + (red - green) / safe, np.where(green == value, 2.0 + (blue - red) / safe, (green - blue) / safe)
    )
    hue = np.mod(hue * np.float32(60.0), np.float32(360.0))
    hue[grey] = 0.0
    saturation = np.where(value > 0, delta / np.where(value > 0, value, np.float32(1.0)), np.float32(0.0))
    return hue, saturation.astype(np.float32, copy=False), value


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
    # Colours are tested a band of rows at a time (the smoothing's halo included), so the
    # float HSV image of a large thumbnail never exists whole; only the boolean tests do.
    height, width = rgb.shape[:2]
    tests = {name: np.zeros((height, width), dtype=bool) for name in _INK_TESTS}
    for read, keep, out in row_bands(height, width, gaussian_halo(_smoothing_sigma(mpp))):
        hue, sat, val = _hsv(rgb[read], mpp)
        for name, test in _INK_TESTS.items():
            tests[name][out] = test(hue[keep], sat[keep], val[keep])
    masks = {colour: _grow_into(tests[f"{colour}_seed"], tests[f"{colour}_loose"]) for colour in INK_COLOURS}
    if mpp is not None:
        min_size = max(1, round(MIN_INK_UM2 / (mpp * mpp)))
        masks = {name: remove_small_objects(mask, max_size=min_size) for name, mask in masks.items()}
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
    return dilate_disk(union, radius)
