"""Rendering of synthetic slides: determinism, ground truth, visibility of the class signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.synthetic import (
    MASK_DOWNSAMPLE,
    SyntheticSlideSpec,
    render_slide,
)
from wsi_pipeline.sources.synthetic.nuclei import LYMPHOCYTE, TUMOUR, make_stamp_bank

# Grey level below which a pixel counts as "dark" (lymphocyte chromatin; tumour nuclei are paler).
DARK = 90


def _cells(values: np.ndarray, d: int = MASK_DOWNSAMPLE) -> np.ndarray:
    """Per truth-grid cell mean of a level-0 (H, W) array whose sides are multiples of d."""
    h, w = values.shape
    return values.reshape(h // d, d, w // d, d).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def positive():
    spec = SyntheticSlideSpec(width=2048, height=1536, mpp=0.5, positive=True, seed=11)
    return spec, *render_slide(spec)


@pytest.fixture(scope="module")
def negative():
    spec = SyntheticSlideSpec(width=2048, height=1536, mpp=0.5, positive=False, seed=12)
    return spec, *render_slide(spec)


def test_rgb_shape_and_dtype(positive):
    spec, rgb, _ = positive
    assert rgb.shape == (spec.height, spec.width, 3)
    assert rgb.dtype == np.uint8


def test_same_spec_same_pixels_other_seed_other_pixels(positive):
    spec, rgb, truth = positive
    again, truth_again = render_slide(spec)
    assert np.array_equal(rgb, again)
    assert np.array_equal(truth.tissue_mask, truth_again.tissue_mask)
    assert np.array_equal(truth.signal_mask, truth_again.signal_mask)
    other, _ = render_slide(SyntheticSlideSpec(spec.width, spec.height, spec.mpp, True, spec.seed + 1))
    # Not a few pixels: a different seed is a different slide.
    assert np.mean(np.any(other != rgb, axis=-1)) > 0.3


def test_truth_grid_shape_and_consistency(positive):
    spec, _, truth = positive
    assert truth.mask_downsample == MASK_DOWNSAMPLE
    expected = (math.ceil(spec.height / MASK_DOWNSAMPLE), math.ceil(spec.width / MASK_DOWNSAMPLE))
    assert truth.tissue_mask.shape == expected and truth.tissue_mask.dtype == bool
    assert truth.signal_mask.shape == expected and truth.signal_mask.dtype == bool
    assert not np.any(truth.signal_mask & ~truth.tissue_mask)
    assert truth.signal_fraction_of_tissue == pytest.approx(truth.signal_mask.sum() / truth.tissue_mask.sum())
    # The level-0 tissue fraction and the grid's agree (they differ only along the outline).
    assert truth.tissue_fraction == pytest.approx(truth.tissue_mask.mean(), abs=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tissue_fraction_and_pieces(seed):
    spec = SyntheticSlideSpec(width=1024, height=1024, mpp=0.5, positive=seed % 2 == 0, seed=seed)
    _, truth = render_slide(spec)
    assert 0.25 <= truth.tissue_fraction <= 0.5
    _, n_pieces = ndimage.label(truth.tissue_mask)
    assert 3 <= n_pieces <= 6


def test_truth_masks_match_pixels(positive):
    _, rgb, truth = positive
    grey = _cells(rgb.astype(np.float32).mean(axis=-1))
    # Glass is near-white everywhere; tissue cells are clearly stained.
    assert np.median(grey[~truth.tissue_mask]) > 225
    assert np.percentile(grey[~truth.tissue_mask], 1) > 215
    assert np.median(grey[truth.tissue_mask]) < 200


def test_signal_fraction_positive_and_negative(positive, negative):
    _, _, truth = positive
    assert 0.08 <= truth.signal_fraction_of_tissue <= 0.22
    _, _, truth = negative
    assert truth.signal_fraction_of_tissue == 0.0
    assert not truth.signal_mask.any()


@pytest.mark.parametrize("fraction", [0.10, 0.20])
def test_signal_fraction_follows_spec(fraction):
    spec = SyntheticSlideSpec(1024, 1024, 0.5, True, seed=5, signal_fraction=fraction)
    _, truth = render_slide(spec)
    assert truth.signal_fraction_of_tissue == pytest.approx(fraction, abs=0.02)


def test_signal_is_visibly_darker(positive):
    _, rgb, truth = positive
    dark = _cells((rgb.astype(np.float32).mean(axis=-1) < DARK).astype(np.float32))
    in_signal = dark[truth.signal_mask].mean()
    elsewhere = dark[truth.tissue_mask & ~truth.signal_mask].mean()
    assert in_signal > 0.2
    assert in_signal > 5 * elsewhere


def test_negative_has_no_cluster_anywhere(positive, negative):
    # 64 µm windows (128 px at 0.5 µm/px): clusters of these small test slides are small too.
    def window_dark(rgb, truth, inside_signal):
        dark = (rgb.astype(np.float32).mean(axis=-1) < DARK).astype(np.float32)
        h, w = dark.shape
        tiles = dark.reshape(h // 128, 128, w // 128, 128).mean(axis=(1, 3))
        k = 128 // MASK_DOWNSAMPLE
        tissue = _cells(truth.tissue_mask.astype(np.float32), k)
        signal = _cells(truth.signal_mask.astype(np.float32), k)
        keep = (tissue > 0.9) & ((signal > 0.9) if inside_signal else (signal == 0))
        return tiles[keep]

    signal_tiles = window_dark(positive[1], positive[2], True)
    negative_tiles = window_dark(negative[1], negative[2], False)
    assert signal_tiles.size and negative_tiles.size
    assert negative_tiles.max() < 0.5 * np.median(signal_tiles)


@pytest.mark.parametrize("mpp", [0.25, 0.5, 1.0])
def test_nucleus_sizes_are_physical(mpp):
    rng = np.random.default_rng(0)
    for kind, low, high in ((LYMPHOCYTE, 4.5, 7.5), (TUMOUR, 7.0, 14.5)):
        for stamp in make_stamp_bank(rng, kind, mpp):
            # Equivalent-circle diameter of the stamped area, in µm.
            area_um2 = stamp.values.sum() * mpp**2
            diameter = 2 * math.sqrt(area_um2 / math.pi)
            assert low <= diameter <= high, (kind, mpp, diameter)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_levels": 2},
        {"mpp": 0.0},
        {"mpp": float("nan")},
        {"signal_fraction": 0.9},
        {"signal_fraction": 0.0},
        {"seed": -1},
        {"width": 10},
    ],
)
def test_invalid_spec_raises_project_error(kwargs):
    args = {"width": 512, "height": 512, "mpp": 0.5, "positive": True, "seed": 0} | kwargs
    with pytest.raises(WSIPipelineError):
        SyntheticSlideSpec(**args)
