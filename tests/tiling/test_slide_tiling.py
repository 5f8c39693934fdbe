"""Tiling real pyramidal slides: synthetic ones with known truth, and a real Aperio slide."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.config import TilingConfig
from wsi_pipeline.sources.synthetic import SyntheticSlideSpec, generate_slide
from wsi_pipeline.sources.wsi import WholeSlide
from wsi_pipeline.tiling import tile_slide, tiling_id
from wsi_pipeline.tiling.overlay import save_tiling_overlay


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "positive.tiff"
    spec = SyntheticSlideSpec(width=2048, height=1536, mpp=0.5, positive=True, seed=11, n_levels=4)
    truth = generate_slide(spec, path)
    return path, truth


def test_tissue_mask_recovers_synthetic_tissue_area(synthetic):
    path, truth = synthetic
    with WholeSlide(path) as slide:
        tiling = tile_slide(slide, TilingConfig(mpp=1.0, tile_px=128))
    assert abs(tiling.mask.mean() - truth.tissue_fraction) <= 0.10 * truth.tissue_fraction


def test_every_tile_centre_lies_on_tissue(synthetic):
    path, truth = synthetic
    with WholeSlide(path) as slide:
        tiling = tile_slide(slide, TilingConfig(mpp=1.0, tile_px=128))
    assert len(tiling.coords) > 10
    centres = tiling.coords + tiling.geometry.size_level0 / 2
    rows = np.minimum((centres[:, 1] // truth.mask_downsample).astype(int), truth.tissue_mask.shape[0] - 1)
    cols = np.minimum((centres[:, 0] // truth.mask_downsample).astype(int), truth.tissue_mask.shape[1] - 1)
    assert truth.tissue_mask[rows, cols].all()
    assert (tiling.tissue_fraction >= 0.5).all()


def test_tiles_come_from_the_nearest_pyramid_level(synthetic):
    path, _ = synthetic
    with WholeSlide(path) as slide:
        assert slide.level_downsamples[:3] == pytest.approx((1, 2, 4), rel=1e-3)
        assert slide.level_for_downsample(2.0) == 1  # 1 µm/px from a 0.5 µm/px slide: level 1, never level 0
        assert slide.level_for_downsample(1.99) == 1
        assert slide.level_for_downsample(3.0) == 1
        assert slide.level_for_downsample(4.0) == 2
        assert slide.level_for_downsample(1.0) == 0
        tile = slide.read_tile(512, 512, 256.0, 128)
        direct = slide.read_region(512, 512, 1, 128, 128)
    np.testing.assert_array_equal(tile, direct)  # no resampling when the level matches exactly


def test_tiling_id_changes_with_parameters():
    base = TilingConfig(mpp=0.5, tile_px=256)
    assert tiling_id(base) == tiling_id(TilingConfig(mpp="20x", tile_px=256))
    assert tiling_id(base) != tiling_id(TilingConfig(mpp=0.5, tile_px=224))
    assert tiling_id(base).startswith("0.5um_256px_")


def test_overlay_is_written(synthetic, tmp_path):
    path, _ = synthetic
    with WholeSlide(path) as slide:
        tiling = tile_slide(slide, TilingConfig(mpp=1.0, tile_px=128))
    out = save_tiling_overlay(tiling, tmp_path / "qc" / "s.png")
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == tiling.thumbnail.shape
    x, y = (tiling.coords[0] / tiling.thumbnail_scale).astype(int)
    assert picture[y, x].tolist() == [20, 160, 60]  # a kept tile's corner is drawn
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it


def test_real_aperio_slide_tiles_into_tissue_only(shared_slides):
    with WholeSlide(shared_slides / "CMU-1-Small-Region.svs") as slide:
        assert slide.mpp == pytest.approx(0.499)
        tiling = tile_slide(slide, TilingConfig(mpp=0.5, tile_px=256))
        assert tiling.geometry.size_level0 == pytest.approx(256 * 0.5 / 0.499)
        assert 10 <= len(tiling.coords) < tiling.n_grid_tiles
        for x, y in tiling.coords:
            tile = slide.read_tile(int(x), int(y), tiling.geometry.size_level0, 256)
            stained = (tile.max(axis=2).astype(int) - tile.min(axis=2)) > 25  # saturated = stained, not glass
            assert stained.mean() > 0.3, f"tile at {(x, y)} is mostly background"
