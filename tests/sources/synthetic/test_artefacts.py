"""Synthetic artefact and fluorescence slides: deterministic, and their truth says what is drawn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import color

from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import (
    ArtefactTruth,
    render_artefact_slide,
    render_fluorescence_slide,
    write_artefact_slide,
)
from wsi_pipeline.sources.synthetic.stain import BACKGROUND_OD

# 6 x 4 mm at 4 µm/px: the physical slide of the tissue tests, at a quarter of the pixels.
SIZE = {"width": 1536, "height": 1024, "mpp": 4.0}


@pytest.fixture(scope="module")
def slide() -> tuple[np.ndarray, ArtefactTruth]:
    return render_artefact_slide(**SIZE, seed=1)


def _excess_od(rgb: np.ndarray) -> np.ndarray:
    """Mean stain optical density over the glass, per pixel."""
    return (-np.log(np.maximum(rgb, 1) / 255.0)).mean(axis=-1) - BACKGROUND_OD


def test_deterministic_for_a_seed():
    small = {"width": 768, "height": 512, "mpp": 8.0}
    rgb, truth = render_artefact_slide(**small, seed=1)
    rgb_again, truth_again = render_artefact_slide(**small, seed=1)
    assert np.array_equal(rgb, rgb_again)
    for name in ("tissue", "border", "pale", "ihc", "blur", "debris", "pen"):
        assert np.array_equal(getattr(truth, name), getattr(truth_again, name)), name
    other, _ = render_artefact_slide(**small, seed=2)
    assert not np.array_equal(rgb, other)


def test_truth_masks_are_level0_and_consistent(slide):
    rgb, truth = slide
    shape = rgb.shape[:2]
    assert rgb.dtype == np.uint8 and rgb.shape == (1024, 1536, 3)
    for name in ("tissue", "border", "pale", "ihc", "blur", "debris", "pen"):
        mask = getattr(truth, name)
        assert mask.shape == shape and mask.dtype == bool and mask.any(), name
    assert set(truth.ink) == {"blue", "green", "black"}
    assert truth.mpp == 4.0
    assert not (truth.pale & ~truth.tissue).any() and not (truth.ihc & ~truth.tissue).any()
    assert not (truth.pale & truth.ihc).any()
    assert not (truth.debris & truth.tissue).any()  # debris lies on glass
    assert 0.2 < truth.tissue.mean() < 0.5


def test_each_stroke_crosses_tissue_and_glass(slide):
    _, truth = slide
    for colour, ink in truth.ink.items():
        over_tissue = (ink & truth.tissue).sum() / ink.sum()
        assert 0.1 < over_tissue < 0.9, colour


def test_ink_colours_over_glass(slide):
    rgb, truth = slide
    glass = ~truth.tissue & ~truth.border & ~truth.debris
    others = {c: m for c, m in truth.ink.items()}
    for colour, ink in truth.ink.items():
        alone = ink & glass & ~np.logical_or.reduce([m for c, m in others.items() if c != colour])
        # Away from the soft edge, where the ink is at its nominal density.
        core = ndimage.binary_erosion(alone, iterations=3)
        hue, sat, val = np.median(color.rgb2hsv(rgb[core][None])[0], axis=0)
        if colour == "blue":
            assert 200 <= hue * 360 <= 235 and sat > 0.5 and val < 0.85
        elif colour == "green":
            assert 120 <= hue * 360 <= 170 and sat > 0.4
        else:
            assert val < 0.2 and sat < 0.3


def test_ink_over_tissue_is_darker_than_over_glass(slide):
    # Beer-Lambert: the stain under the ink absorbs too.
    rgb, truth = slide
    he = truth.tissue & ~truth.pale & ~truth.ihc
    grey = rgb.mean(axis=-1)
    checked = 0
    for colour in ("blue", "green"):
        ink = truth.ink[colour] & ~np.logical_or.reduce([m for c, m in truth.ink.items() if c != colour])
        if (ink & he).sum() > 1000:
            assert np.median(grey[ink & he]) < np.median(grey[ink & ~truth.tissue]) - 15, colour
            checked += 1
    assert checked


def test_border_is_black_band_along_edges(slide):
    rgb, truth = slide
    assert rgb[truth.border].max() <= 20
    rows, cols = truth.border.all(axis=1), truth.border.all(axis=0)
    # A band of whole rows or columns touching the image edge.
    assert (rows[0] or rows[-1] or cols[0] or cols[-1]) and (rows.any() or cols.any())
    assert truth.border.mean() < 0.1


def test_pale_piece_has_a_third_of_the_stain(slide):
    rgb, truth = slide
    od = _excess_od(rgb)
    clean = ~truth.pen & ~truth.blur
    normal = truth.tissue & ~truth.pale & ~truth.ihc & clean
    ratio = od[truth.pale & clean].mean() / od[normal].mean()
    assert 0.25 <= ratio <= 0.45


def test_ihc_piece_is_brown_and_pale_blue_not_pink(slide):
    rgb, truth = slide
    pixels = rgb[truth.ihc & ~truth.pen].astype(int)
    red, green, blue = pixels.T
    brown = (red > green) & (green > blue)  # DAB: absorbs blue most
    bluish = blue > red  # haematoxylin counterstain
    pink = (red > blue) & (blue > green)  # eosin: absorbs green most
    he = rgb[truth.tissue & ~truth.pale & ~truth.ihc & ~truth.pen].astype(int)
    he_pink = (he[:, 0] > he[:, 2]) & (he[:, 2] > he[:, 1])
    # Brown and blue; the few "pink" pixels are dark DAB over haematoxylin, while H&E is pink.
    assert brown.mean() > 0.2 and bluish.mean() > 0.2
    assert pink.mean() < 0.2 and he_pink.mean() > 0.5


def test_blur_patches_are_out_of_focus(slide):
    rgb, truth = slide
    grey = rgb.mean(axis=-1)
    sharpness = np.abs(ndimage.laplace(grey))
    inner = ndimage.binary_erosion(truth.blur, iterations=3) & truth.tissue & ~truth.pen & ~truth.pale & ~truth.ihc
    sharp = truth.tissue & ~truth.blur & ~truth.pen & ~truth.pale & ~truth.ihc
    sharp = ndimage.binary_erosion(sharp, iterations=3)
    assert inner.sum() > 100
    assert sharpness[inner].mean() < 0.5 * sharpness[sharp].mean()


def test_debris_is_grey_and_includes_clumps_bigger_than_tissue_specks(slide):
    rgb, truth = slide
    core = ndimage.binary_erosion(truth.debris, iterations=1)
    pixels = rgb[core].astype(int)
    assert (pixels.max(axis=1) - pixels.min(axis=1)).mean() < 12  # grey, not stain-coloured
    labels, n = ndimage.label(truth.debris)
    areas_um2 = np.bincount(labels.ravel())[1:] * truth.mpp**2
    assert n >= 10 and areas_um2.max() > 20000 and np.median(areas_um2) < 5000


def test_fluorescence_slide_dark_with_bright_blue_tissue():
    rgb, tissue = render_fluorescence_slide(**SIZE, seed=4)
    again, tissue_again = render_fluorescence_slide(**SIZE, seed=4)
    assert np.array_equal(rgb, again) and np.array_equal(tissue, tissue_again)
    assert tissue.shape == rgb.shape[:2] and 0.2 < tissue.mean() < 0.5
    brightness = rgb.max(axis=-1)
    assert np.percentile(brightness[~tissue], 99) < 20
    assert brightness[tissue].mean() > 3 * brightness[~tissue].mean()
    bright = rgb[tissue & (brightness > 100)].astype(int)
    assert len(bright) > 1000 and (bright[:, 2] > bright[:, :2].max(axis=1)).all()  # DAPI blue


def test_write_artefact_slide_opens_as_a_slide(tmp_path):
    path = tmp_path / "sub" / "artefacts.tiff"
    truth = write_artefact_slide(path, width=512, height=384, mpp=4.0, seed=3)
    _, rendered = render_artefact_slide(512, 384, 4.0, seed=3)
    assert np.array_equal(truth.tissue, rendered.tissue)
    with open_source("wsi", path) as source:
        assert source.dimensions == (512, 384)
        assert source.mpp == pytest.approx(4.0, rel=1e-3)
