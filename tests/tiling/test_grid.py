"""Tile grid geometry and mask fractions against hand-computed references."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.tiling.grid import GridGeometry, grid_coordinates, mask_fractions


def test_geometry_scales_tile_to_level0():
    geometry = GridGeometry.at_resolution(slide_mpp=0.25, target_mpp=0.5, tile_px=256)
    assert geometry.size_level0 == 512 and geometry.stride_level0 == 512 and geometry.mpp == 0.5
    overlapping = GridGeometry.at_resolution(0.5, 0.5, 256, overlap_px=64)
    assert overlapping.stride_level0 == 192


def test_a_level_within_tolerance_is_read_as_is():
    # 0.499 µm/px slide, target 0.5: within 2%, so level 0 is used unresampled at 0.499.
    snapped = GridGeometry.at_resolution(0.499, 0.5, 256, level_downsamples=(1.0, 4.0), tolerance=0.02)
    assert snapped.size_level0 == 256 and snapped.mpp == pytest.approx(0.499) and snapped.read_level == 0
    exact = GridGeometry.at_resolution(0.499, 0.5, 256, level_downsamples=(1.0, 4.0), tolerance=0.0)
    assert exact.size_level0 == pytest.approx(256 * 0.5 / 0.499) and exact.mpp == pytest.approx(0.5)
    # 0.2277 µm/px scan (Hamamatsu-like), target 0.5: level 1 is 0.455, 9% off, outside 2%: resample from it.
    far = GridGeometry.at_resolution(0.2277, 0.5, 256, level_downsamples=(1.0, 2.0, 8.0), tolerance=0.02)
    assert far.mpp == pytest.approx(0.5) and far.read_level == 1
    # 40x Aperio-like pyramid (1, 4, 16): 20x tiles come from level 0.
    aperio = GridGeometry.at_resolution(0.25, 0.5, 256, level_downsamples=(1.0, 4.0, 16.0), tolerance=0.02)
    assert aperio.read_level == 0 and aperio.size_level0 == 512


def test_grid_covers_the_edges():
    coords = grid_coordinates(1000, 600, GridGeometry(256, 256.0, 256.0, 0.5))
    # 1000 px = 3 whole tiles + a strip; 600 px = 2 + a strip: the strips get tiles too.
    assert coords.shape == (4 * 3, 2)
    assert coords.max(axis=0).tolist() == [768, 512]
    assert (coords[:, 0] < 1000).all() and (coords[:, 1] < 600).all()


def test_grid_with_overlap_ends_at_the_first_tile_reaching_the_edge():
    xs = np.unique(grid_coordinates(1000, 256, GridGeometry(256, 256.0, 192.0, 0.5))[:, 0])
    assert xs.tolist() == [0, 192, 384, 576, 768]  # 768 + 256 >= 1000; no tile starting at 960


def test_small_slide_gets_one_tile_and_empty_slide_none():
    assert grid_coordinates(100, 100, GridGeometry(256, 256.0, 256.0, 0.5)).tolist() == [[0, 0]]
    assert grid_coordinates(0, 100, GridGeometry(256, 256.0, 256.0, 0.5)).shape == (0, 2)


def test_mask_fraction_matches_brute_force():
    rng = np.random.default_rng(1)
    mask = rng.random((40, 50)) > 0.6
    scale = 16.0
    coords = grid_coordinates(50 * 16, 40 * 16, GridGeometry(64, 64.0, 64.0, 1.0))
    fractions = mask_fractions(mask, scale, coords, 64.0)
    for (x, y), fraction in zip(coords, fractions):
        block = mask[y // 16 : y // 16 + 4, x // 16 : x // 16 + 4]
        assert fraction == pytest.approx(block.sum() / 16)  # part of the last column lies outside: glass


def test_mask_fraction_counts_outside_the_slide_as_glass():
    mask = np.ones((10, 10), dtype=bool)  # a slide of 100 x 100 level-0 px, all tissue
    coords = np.array([[0, 0], [80, 0], [80, 80]])
    fractions = mask_fractions(mask, 10.0, coords, 40.0)
    assert fractions.tolist() == pytest.approx([1.0, 0.5, 0.25])
