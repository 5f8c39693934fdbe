"""Fluorescence scans: recognised from the thumbnail and segmented on brightness."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.sources.synthetic import render_fluorescence_slide
from wsi_pipeline.tiling.tissue import (
    fluorescence_mask,
    looks_fluorescent,
    segment_tissue,
)


@pytest.fixture(scope="module")
def fluorescence():
    return render_fluorescence_slide(2048, 1366, 3.0, seed=3)


def test_synthetic_fluorescence_recognised_and_segmented_by_auto(fluorescence, array_source, on_grid, dice_of):
    rgb, truth = fluorescence
    result = segment_tissue(array_source(rgb, 3.0), TissueConfig())
    assert result.modality == "fluorescence"
    assert not result.pen.any()
    expected = on_grid(truth, result.tissue.shape)
    assert 0.2 < expected.mean() < 0.6
    assert dice_of(result.tissue, expected) >= 0.90


def test_fluorescence_mask_is_not_the_whole_image(fluorescence, array_source, on_grid, dice_of):
    rgb, truth = fluorescence
    thumb, scale = array_source(rgb, 3.0).thumbnail(8.0)
    tissue = fluorescence_mask(thumb, scale * 3.0)
    expected = on_grid(truth, tissue.shape)
    assert dice_of(tissue, expected) >= 0.90
    assert tissue.mean() < expected.mean() + 0.05


def test_looks_fluorescent_on_plain_images():
    rng = np.random.default_rng(1)
    dark = rng.integers(0, 12, size=(100, 100, 3), dtype=np.uint8)
    dark[30:60, 30:60, 2] = 200  # a bright blue (DAPI) patch
    assert looks_fluorescent(dark)
    glass = np.full((100, 100, 3), 238, dtype=np.uint8)
    assert not looks_fluorescent(glass)
    # Mostly black padding around a small brightfield scan: dark, but its glass is bright.
    padded = np.zeros((100, 100, 3), dtype=np.uint8)
    padded[60:, 60:] = 238
    padded[70:90, 70:90] = (200, 120, 180)
    assert (padded.max(axis=-1) < 64).mean() > 0.8
    assert not looks_fluorescent(padded)


def test_fluorescence_mask_on_blank_background_is_empty():
    rng = np.random.default_rng(2)
    dark = rng.integers(0, 10, size=(200, 200, 3), dtype=np.uint8)
    assert not fluorescence_mask(dark, 8.0).any()
