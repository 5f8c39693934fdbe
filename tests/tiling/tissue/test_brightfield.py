"""Brightfield tissue masks against the ground truth of the synthetic artefact slide."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wsi_pipeline.tiling.tissue import (
    INK_COLOURS,
    brightfield_masks,
    glass_intensity,
    looks_fluorescent,
    optical_density,
    scanner_padding,
)


def test_artefact_slide_read_as_brightfield_at_the_segmentation_scale(artefact_segmented):
    result, _ = artefact_segmented
    assert result.modality == "brightfield"
    # 6 mm wide at 3 µm/px: thumbnail_mpp 8 would give 768 px, so it is segmented at ~6 µm/px.
    assert result.mpp == pytest.approx(6.0, rel=0.01)
    assert max(result.tissue.shape) == 1024
    assert result.tissue.shape == result.pen.shape


def test_tissue_matches_truth_without_pen_and_border(artefact_segmented, dice_of):
    result, grid = artefact_segmented
    truth = grid["tissue"] & ~grid["pen"] & ~grid["border"]
    assert dice_of(result.tissue, truth) >= 0.90


@pytest.mark.parametrize("colour", INK_COLOURS)
def test_each_ink_colour_excluded_from_tissue_and_in_the_pen_mask(artefact_segmented, colour):
    result, grid = artefact_segmented
    ink = grid[f"ink_{colour}"]
    assert ink.sum() > 1000, "the synthetic slide should carry a real stroke of every colour"
    assert (ink & grid["tissue"]).sum() > 200, "each stroke should cross tissue"
    assert (result.tissue & ink).sum() / ink.sum() <= 0.10
    assert (result.pen & ink).sum() / ink.sum() >= 0.90


@pytest.mark.parametrize("kind", ["pale", "ihc"])
def test_pale_and_ihc_tissue_found(artefact_segmented, kind):
    result, grid = artefact_segmented
    region = grid[kind] & ~grid["near_pen"]
    assert region.sum() > 1000
    assert (result.tissue & region).sum() / region.sum() >= 0.90


def test_black_border_and_debris_are_not_tissue(artefact_segmented):
    result, grid = artefact_segmented
    assert (result.tissue & grid["border"]).sum() / grid["border"].sum() < 0.02
    # Padding is not ink either: it must not count as pen area in the QC.
    assert (result.pen & grid["border"] & ~grid["near_pen"]).sum() / grid["border"].sum() < 0.05
    # Some debris clumps are larger than the smallest tissue piece kept (20000 µm² = 556 px at
    # 6 µm/px), so colour, not size, must reject them.
    labels, n = ndimage.label(grid["debris"])
    assert n > 0 and np.bincount(labels.ravel())[1:].max() > 20000 / result.mpp**2
    assert (result.tissue & grid["debris"]).sum() <= 0.01 * grid["debris"].sum()


def test_glass_is_measured_not_assumed_white(artefact_slide, array_source, on_grid, dice_of):
    # A yellowish white balance (glass ~ (240, 233, 216)): with I0 = 255 all glass would have a
    # coloured optical density; measured on the glass, it has none.
    rgb, truth = artefact_slide
    thumb, _ = array_source(rgb, truth.mpp).thumbnail(6.0)
    thumb = np.clip(thumb * np.array([1.0, 0.97, 0.90]), 0, 255).astype(np.uint8)
    assert glass_intensity(thumb) == pytest.approx([240, 233, 216], abs=3)
    tissue, _ = brightfield_masks(thumb, 6.0)
    expected = on_grid(truth.tissue & ~truth.pen & ~truth.border, tissue.shape)
    assert dice_of(tissue, expected) >= 0.90


def test_slide_that_is_all_tissue_or_all_pale_is_all_tissue(artefact_slide, array_source):
    # No glass to split from: an adaptive split (pure Otsu) would throw half the tissue away.
    rgb, truth = artefact_slide
    for region in (truth.tissue & ~truth.pen & ~truth.pale & ~truth.ihc & ~truth.blur, truth.pale & ~truth.pen):
        inside = ndimage.binary_erosion(region[::4, ::4], iterations=30)
        y, x = np.argwhere(inside)[inside.sum() // 2] * 4
        crop = np.ascontiguousarray(rgb[y - 100 : y + 100, x - 100 : x + 100])
        assert truth.tissue[y - 100 : y + 100, x - 100 : x + 100].all()
        thumb, _ = array_source(crop, truth.mpp).thumbnail(6.0)
        tissue, pen = brightfield_masks(thumb, 6.0, min_object_um2=1000, max_hole_um2=1000)
        assert tissue.mean() >= 0.95 and not pen.any()


def test_blank_glass_has_no_tissue():
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(238, 2, size=(200, 300, 3)), 0, 255).astype(np.uint8)
    tissue, pen = brightfield_masks(glass, 8.0)
    assert not tissue.any() and not pen.any()


def test_scanner_padding_is_solid_blocks_on_the_edge():
    black = np.zeros((60, 80), dtype=bool)
    black[:6] = True  # a band along the top
    black[40:, 70:] = True  # a corner block
    for i in range(30):  # a thin diagonal stroke running off the left edge
        black[20 + i, max(0, i - 2) : i + 2] = True
    black[25:30, 40:45] = True  # a dark speck away from the edges
    black[6:18, 50:53] = True  # a stroke running into the band
    padding = scanner_padding(black)
    assert padding[:6].all() and padding[40:, 70:].all()
    assert padding.sum() == 6 * 80 + 20 * 10
    assert not scanner_padding(np.zeros((5, 5), dtype=bool)).any()


def test_optical_density_against_glass():
    rgb = np.array([[[240, 240, 240], [120, 240, 24], [250, 250, 250]]], dtype=np.uint8)
    od = optical_density(rgb, np.array([240.0, 240.0, 240.0]))
    assert od[0, 0] == pytest.approx([0, 0, 0], abs=1e-6)
    assert od[0, 1] == pytest.approx([np.log(2), 0, np.log(10)], rel=1e-5)
    assert (od[0, 2] == 0).all()  # brighter than the glass is glass


def test_brightfield_with_black_border_is_not_fluorescent(artefact_source):
    thumb, _ = artefact_source.thumbnail(8.0)
    assert (thumb.max(axis=-1) < 64).mean() > 0.01  # it does have a black band
    assert not looks_fluorescent(thumb)


def test_brightfield_masks_rejects_bad_input():
    with pytest.raises(ValueError, match="RGB"):
        brightfield_masks(np.zeros((4, 4), dtype=np.uint8), 8.0)
    with pytest.raises(ValueError, match="mpp"):
        brightfield_masks(np.zeros((4, 4, 3), dtype=np.uint8), 0.0)


def test_masks_are_the_same_in_one_band_and_in_many(artefact_slide, monkeypatch):
    """A small image is smoothed once and both passes use it; a large one is smoothed a band at a time, twice."""
    from wsi_pipeline.tiling.tissue import bands, brightfield

    rgb = artefact_slide[0][::2, ::2]  # 1024 x 683 at 6 µm/px: one band of 2**20 pixels
    assert len(list(bands.row_bands(*rgb.shape[:2]))) == 1
    whole = brightfield_masks(rgb, 6.0)
    monkeypatch.setattr(brightfield, "row_bands", lambda h, w, halo=0: bands.row_bands(h, w, halo, pixels=50 * w))
    banded = brightfield_masks(rgb, 6.0)
    assert whole[0].any() and not whole[0].all()
    np.testing.assert_array_equal(banded[0], whole[0])
    np.testing.assert_array_equal(banded[1], whole[1])
