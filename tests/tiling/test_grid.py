"""Tile grid geometry and tissue fractions against hand-computed references."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.tiling import GridGeometry, grid_coordinates, tissue_fractions


def test_geometry_scales_tile_to_level0():
    geometry = GridGeometry.at_resolution(slide_mpp=0.25, target_mpp=0.5, tile_px=256)
    assert geometry.size_level0 == 512 and geometry.stride_level0 == 512
    overlapping = GridGeometry.at_resolution(0.5, 0.5, 256, overlap_px=64)
    assert overlapping.stride_level0 == 192


def test_grid_keeps_only_whole_tiles():
    coords = grid_coordinates(1000, 600, GridGeometry(256, 256.0, 256.0))
    assert coords.shape == (3 * 2, 2)
    assert coords.max(axis=0).tolist() == [512, 256]
    assert (coords[:, 0] + 256 <= 1000).all() and (coords[:, 1] + 256 <= 600).all()


def test_grid_empty_when_slide_smaller_than_tile():
    assert grid_coordinates(100, 100, GridGeometry(256, 256.0, 256.0)).shape == (0, 2)


def test_tissue_fraction_matches_brute_force():
    rng = np.random.default_rng(1)
    mask = rng.random((40, 50)) > 0.6
    scale = 16.0
    coords = grid_coordinates(50 * 16, 40 * 16, GridGeometry(64, 64.0, 64.0))
    fractions = tissue_fractions(mask, scale, coords, 64.0)
    for (x, y), fraction in zip(coords, fractions):
        block = mask[y // 16 : y // 16 + 4, x // 16 : x // 16 + 4]
        assert fraction == pytest.approx(block.mean())
