"""Pen ink colours: blue, green and black marker ink found; stains never taken for ink."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.tiling.tissue import INK_COLOURS, ink_masks, pen_mask

# Ink as on real slides, full strength over glass, thinner (translucent), and over H&E tissue
# (Beer-Lambert: ink and stain transmittances multiply).
INK = {
    "blue": [(40, 80, 170), (82, 124, 195), (33, 44, 130), (23, 35, 120)],
    "green": [(50, 140, 90), (94, 174, 133), (42, 76, 69)],
    "black": [(20, 20, 24), (42, 42, 48), (17, 11, 18), (5, 5, 5)],
}
# Stains and background that must never be called ink.
NOT_INK = {
    "haematoxylin purple": (120, 85, 154),
    "dense haematoxylin without eosin": (65, 59, 134),
    "dark purple epithelium": (75, 40, 95),
    "eosin pink": (213, 140, 189),
    "pale pink": (226, 196, 220),
    "DAB brown": (140, 95, 55),
    "DAB with haematoxylin": (96, 67, 82),
    "pale blue IHC counterstain": (191, 188, 217),
    "light blue IHC counterstain": (160, 165, 205),
    "glass": (240, 240, 240),
}


def _patch(rgb: tuple[int, int, int], size: int = 6) -> np.ndarray:
    return np.tile(np.array(rgb, dtype=np.uint8), (size, size, 1))


@pytest.mark.parametrize("colour, rgb", [(c, rgb) for c, rgbs in INK.items() for rgb in rgbs])
def test_ink_found_in_its_own_colour_only(colour, rgb):
    masks = ink_masks(_patch(rgb))
    assert set(masks) == set(INK_COLOURS)
    assert masks[colour].all(), f"{rgb} not found as {colour} ink"
    for other in INK_COLOURS:
        if other != colour:
            assert not masks[other].any(), f"{colour} ink {rgb} also called {other}"


@pytest.mark.parametrize("name", sorted(NOT_INK))
def test_stains_and_glass_are_not_ink(name):
    masks = ink_masks(_patch(NOT_INK[name]))
    assert not any(mask.any() for mask in masks.values()), f"{name} {NOT_INK[name]} taken for ink"
    assert not pen_mask(_patch(NOT_INK[name])).any()


def test_haematoxylin_next_to_stroma_is_not_grown_from_nothing():
    # Loose criteria only extend real seeds: dense haematoxylin alone is no stroke.
    image = _patch(NOT_INK["eosin pink"], 12)
    image[3:9, 3:9] = NOT_INK["dense haematoxylin without eosin"]
    assert not any(mask.any() for mask in ink_masks(image).values())


def test_ink_over_tissue_is_reached_from_the_stroke_over_glass():
    # A stroke runs from glass onto tissue; the purplish-navy over-tissue part (hue ~248°, not
    # a seed on its own) is kept because it touches the pure blue part.
    image = _patch(NOT_INK["glass"], 12)
    image[4:8, :6] = (40, 80, 170)  # over glass
    image[4:8, 6:] = (45, 40, 140)  # over haematoxylin-rich tissue
    alone = ink_masks(image[4:8, 6:])["blue"]
    assert not alone.any()
    blue = ink_masks(image)["blue"]
    assert blue[4:8].all() and blue.sum() == 48


def test_pen_mask_is_dilated_union_in_microns():
    image = _patch(NOT_INK["glass"], 41)
    image[20, 20] = (40, 80, 170)
    image[10, 10] = (50, 140, 90)
    assert pen_mask(image).sum() == 2 * 5  # one pixel each, grown by a radius-1 disk (a plus sign)
    # In µm: a 80 µm square of ink at 2 µm/px, grown by 8 µm (4 px) and by the minimum (1 px).
    image = _patch(NOT_INK["glass"], 120)
    image[40:80, 40:80] = (40, 80, 170)
    grown = pen_mask(image, mpp=2.0, dilation_um=8.0)
    least = pen_mask(image, mpp=2.0, dilation_um=1.0)
    assert grown[40:80, 40:80].all() and grown[60, 83] and grown[36, 60]
    assert not grown[60, 90] and not grown[30, 60]
    assert least.sum() < grown.sum()


def test_ink_masks_with_mpp_drop_specks_and_smooth_nuclei_away():
    # At 1 µm/px a 5 µm navy dot is a nucleus-sized speck, not ink; a 200 µm stroke is ink.
    image = _patch(NOT_INK["eosin pink"], 400)
    image[50:55, 50:55] = (40, 80, 170)
    image[200:400, 100:300] = (40, 80, 170)
    blue = ink_masks(image, mpp=1.0)["blue"]
    assert not blue[40:65, 40:65].any()
    assert blue[220:380, 120:280].all()


def test_fine_thumbnails_are_judged_on_the_blend_of_nuclei_and_stroma():
    # At 1 µm/px a sheet of touching navy-blue nuclei on pink stroma: every nucleus pixel has an
    # ink colour and they connect, but a stroke is a uniform colour over hundreds of µm, and
    # blended at ink scale this is purple tissue.
    image = _patch(NOT_INK["eosin pink"], 400)
    lattice = np.zeros((400, 400), dtype=bool)
    for start in range(0, 400, 8):
        lattice[start : start + 3] = True
        lattice[:, start : start + 3] = True
    image[lattice] = (50, 60, 150)
    assert ink_masks(image)["blue"][lattice].all()  # pixel by pixel, it is "ink"
    assert not ink_masks(image, mpp=1.0)["blue"].any()


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        ink_masks(np.zeros((4, 4), dtype=np.uint8))


def test_hsv_planes_match_scikit_image():
    from skimage import color

    from wsi_pipeline.tiling.tissue.pen import hsv_planes

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3)).astype(np.float32) / 255
    image[:4] = 0.5  # greys: hue 0
    image[4:8, :, 2] = image[4:8, :, 1]  # ties between green and blue
    image[8:12] = 0.0  # black: saturation 0
    hue, saturation, value = hsv_planes(image)
    reference = color.rgb2hsv(image)
    np.testing.assert_allclose(hue, reference[..., 0] * 360, atol=1e-3)
    np.testing.assert_allclose(saturation, reference[..., 1], atol=1e-6)
    np.testing.assert_allclose(value, reference[..., 2], atol=1e-6)
