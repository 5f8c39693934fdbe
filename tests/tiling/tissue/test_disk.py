"""Disk morphology by distance transform, against scipy's binary morphology with skimage's disk."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import morphology

from wsi_pipeline.tiling.tissue import disk
from wsi_pipeline.tiling.tissue.bands import row_bands
from wsi_pipeline.tiling.tissue.disk import close_disk, dilate_disk, erode_disk


@pytest.fixture(params=["auto", "transform"], autouse=True)
def route(request, monkeypatch):
    """Every test twice: as the code chooses (scipy below EDT_FROM_RADIUS), and the distance transform at every radius."""
    if request.param == "transform":
        monkeypatch.setattr(disk, "EDT_FROM_RADIUS", 1)
    return request.param


OPERATIONS = [(dilate_disk, ndimage.binary_dilation), (erode_disk, ndimage.binary_erosion), (close_disk, ndimage.binary_closing)]


def masks(seed: int) -> list[np.ndarray]:
    """Random speckle, blobs, masks touching every edge, all-False and all-True."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(7, 70, 2))
    blobs = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=3)
    return [rng.random(shape) < rng.uniform(0.05, 0.9), blobs, ~blobs, np.zeros(shape, bool), np.ones(shape, bool)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 9, 16])
def test_equals_scipy_with_a_skimage_disk(seed, radius):
    for mask in masks(seed):
        for ours, reference in OPERATIONS:
            expected = mask.copy() if radius == 0 else reference(mask, morphology.disk(radius))
            np.testing.assert_array_equal(ours(mask, radius), expected, err_msg=f"{ours.__name__} r={radius}")


def test_a_single_pixel_grows_into_the_disk_and_the_input_is_not_changed():
    mask = np.zeros((21, 21), bool)
    mask[10, 10] = True
    before = mask.copy()
    grown = dilate_disk(mask, 4)
    np.testing.assert_array_equal(grown[6:15, 6:15], morphology.disk(4).astype(bool))
    assert grown.sum() == morphology.disk(4).sum() == 49
    np.testing.assert_array_equal(mask, before)


def test_negative_radius_is_refused():
    with pytest.raises(ValueError, match="radius"):
        dilate_disk(np.ones((3, 3), bool), -1)


@pytest.mark.parametrize("radius", [1, 4, 11])
def test_bands_of_rows_give_the_whole_image_result(monkeypatch, radius):
    rng = np.random.default_rng(radius)
    mask = ndimage.binary_dilation(rng.random((90, 40)) < 0.03, iterations=2) | (rng.random((90, 40)) < 0.02)
    whole = [op(mask, radius) for op, _ in OPERATIONS]
    # Bands of 3 rows: many band edges, each closer to a pixel than the radius.
    monkeypatch.setattr("wsi_pipeline.tiling.tissue.disk.row_bands", lambda h, w, halo=0: row_bands(h, w, halo, pixels=3 * 40))
    for (op, reference), expected in zip(OPERATIONS, whole, strict=True):
        banded = op(mask, radius)
        np.testing.assert_array_equal(banded, expected, err_msg=op.__name__)
        np.testing.assert_array_equal(banded, reference(mask, morphology.disk(radius)), err_msg=op.__name__)
