"""Huge synthetic slides written tile by tile: OpenSlide layout, truth, level agreement, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import openslide
import pytest
import tifffile
from scipy import ndimage

from wsi_pipeline.sources.synthetic import LargeSlideTruth, write_large_slide
from wsi_pipeline.sources.synthetic.large import CELL_PX, default_n_levels

WIDTH, HEIGHT, MPP = 6000, 4000, 0.25
#: Glass is written as 240 +- 2; after JPEG it stays within a few levels of that.
GLASS = 240.0


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[str, LargeSlideTruth]:
    """A non-square slide (catches swapped axes) with the default pyramid."""
    path = tmp_path_factory.mktemp("large") / "slide.tiff"
    truth = write_large_slide(path, WIDTH, HEIGHT, mpp=MPP, seed=7)
    return str(path), truth


def _read(path: str, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    with openslide.OpenSlide(path) as slide:
        return np.asarray(slide.read_region(location, level, size).convert("RGB"), dtype=np.float64)


def _box_downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = rgb.shape[0] // factor, rgb.shape[1] // factor
    return rgb[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor, 3).mean(axis=(1, 3))


def test_openslide_levels_dimensions_and_mpp(written):
    path, truth = written
    expected = ((6000, 4000), (3000, 2000), (1500, 1000))
    with openslide.OpenSlide(path) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
        assert slide.level_dimensions == expected
        assert slide.level_downsamples == pytest.approx([1.0, 2.0, 4.0])
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP, rel=1e-6)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(MPP, rel=1e-6)
    assert truth.level_dimensions == expected and truth.n_levels == 3
    assert (truth.width, truth.height, truth.mpp) == (WIDTH, HEIGHT, MPP)
    assert truth.cell_px == CELL_PX
    assert truth.tissue_mask.shape == (-(-HEIGHT // CELL_PX), -(-WIDTH // CELL_PX))
    assert truth.tissue_mask.dtype == bool


def test_tiled_jpeg_pages(written):
    path, _ = written
    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        assert len(pages) == 3
        for index, page in enumerate(pages):
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (512, 512)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.subfiletype == (1 if index else 0)


def test_default_level_count():
    assert default_n_levels(2000, 1000) == 1
    assert default_n_levels(2001, 1000) == 2
    assert default_n_levels(6000, 4000) == 3
    assert default_n_levels(20_000, 20_000) == 5
    assert default_n_levels(60_000, 60_000) == 6
    assert default_n_levels(150_000, 100_000) == 8


def test_tissue_fraction_is_as_asked(written):
    path, truth = written
    assert truth.tissue_fraction == pytest.approx(0.3, abs=0.01)
    assert truth.tissue_mask.mean() == pytest.approx(0.3, abs=0.02)
    assert truth.tissue_area_mm2 == pytest.approx(0.3 * 1.5 * 1.0, rel=0.05)
    # The pixels agree: at level 2 (16 px per cell), non-glass pixels cover about that fraction.
    level2 = _read(path, 2, (0, 0), (1500, 1000))
    stained = np.abs(level2 - GLASS).max(axis=2) > 12
    assert stained.mean() == pytest.approx(truth.tissue_fraction, abs=0.03)


def test_tissue_is_stained_and_glass_is_glass(written):
    path, truth = written
    # Cells well inside tissue and well inside glass (8 cells = 512 px from the outline).
    inside = ndimage.binary_erosion(truth.tissue_mask, iterations=8, border_value=0)
    outside = ndimage.binary_erosion(~truth.tissue_mask, iterations=8, border_value=0)
    assert inside.any() and outside.any()
    for mask, is_tissue in ((inside, True), (outside, False)):
        row, col = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
        y, x = int(row) * CELL_PX, int(col) * CELL_PX
        region = _read(path, 0, (x, y), (256, 256))
        mean = region.reshape(-1, 3).mean(axis=0)
        if is_tissue:
            # H&E: darker than glass, green absorbed most (pink/purple).
            assert mean.mean() < 215
            assert mean[1] < mean[0] - 20 and mean[1] < mean[2] - 10
            assert region.std() > 10  # textured, not flat colour
        else:
            assert np.abs(mean - GLASS).max() < 3
            assert np.abs(region - GLASS).max() < 12


def test_reduced_levels_agree_with_box_downsampled_level0(written):
    path, _ = written
    # A 2048-px square around the slide centre crosses tissue outlines at this seed (checked).
    x0, y0, side = 2048, 1024, 2048
    level0 = _read(path, 0, (x0, y0), (side, side))
    for level, factor in ((1, 2), (2, 4)):
        reduced = _read(path, level, (x0, y0), (side // factor, side // factor))
        expected = _box_downsample(level0, factor)
        stained = np.abs(expected - GLASS).max(axis=2) > 12
        assert 0.1 < stained.mean() < 0.9  # the window holds both tissue and glass
        difference = np.abs(reduced - expected)
        assert difference.mean() < 3.0  # measured 1.0 (level 1) and 1.2 (level 2)
        # Averaged over 32 level-0 px (JPEG noise and the 1-px outline band average out).
        block = 32 // factor
        assert np.abs(_box_downsample(reduced, block) - _box_downsample(expected, block)).max() < 8.0


def test_flat_slide_has_one_level(tmp_path):
    path = tmp_path / "flat.tiff"
    truth = write_large_slide(path, 3000, 2000, flat=True, seed=1)
    assert truth.n_levels == 1 and truth.level_dimensions == ((3000, 2000),)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_count == 1
        assert slide.dimensions == (3000, 2000)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(ValueError, match="flat"):
        write_large_slide(tmp_path / "bad.tiff", 3000, 2000, flat=True, n_levels=3)


def test_same_arguments_same_bytes_and_atomic(tmp_path):
    kwargs = {"width": 2600, "height": 1700, "n_levels": 2, "seed": 3, "tissue_fraction": 0.4}
    first, second = tmp_path / "a" / "one.tiff", tmp_path / "two.tiff"
    write_large_slide(first, **kwargs)
    write_large_slide(second, workers=2, **kwargs)  # threads do not change the output
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["one.tiff", "two.tiff"]
    other = tmp_path / "three.tiff"
    write_large_slide(other, **{**kwargs, "seed": 4})
    assert other.read_bytes() != first.read_bytes()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from wsi_pipeline.sources.synthetic import large

    def boom(*args, **kwargs):
        raise RuntimeError("encoder failed")

    calls = {"n": 0}
    real = large._SlideModel.tile_pixels

    def fail_later(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            boom()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(large._SlideModel, "tile_pixels", fail_later)
    with pytest.raises(RuntimeError, match="encoder failed"):
        write_large_slide(tmp_path / "slide.tiff", 4000, 3000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 10, "height": 4000}, "width"),
        ({"tile": 500}, "tile"),
        ({"quality": 0}, "quality"),
        ({"tissue_fraction": 1.0}, "tissue_fraction"),
        ({"n_levels": 12}, "n_levels"),
        ({"mpp": 0.0}, "mpp"),
        ({"seed": -1}, "seed"),
    ],
)
def test_rejects_unusable_arguments(tmp_path, kwargs, match):
    arguments = {"width": 4000, "height": 3000, **kwargs}
    with pytest.raises(ValueError, match=match):
        write_large_slide(tmp_path / "s.tiff", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_bigtiff_when_raw_pyramid_exceeds_2gib(tmp_path):
    # 28,000^2 RGB is 2.35 GB raw; little tissue keeps it quick (glass tiles are pre-encoded).
    path = tmp_path / "big.tiff"
    write_large_slide(path, 28_000, 28_000, tissue_fraction=0.02, n_levels=2)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == ((28_000, 28_000), (14_000, 14_000))


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from wsi_pipeline.sources.synthetic import write_large_slide
    start = time.perf_counter()
    truth = write_large_slide(sys.argv[1], 20_000, 20_000)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so this child would report
    # the peak of the pytest process it was forked from.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({
        "seconds": time.perf_counter() - start,
        "peak_mb": int(hwm.split()[1]) / 1024,
        "levels": truth.level_dimensions,
    }))
    """
)


def test_writing_20k_slide_stays_in_bounded_memory(tmp_path):
    # 20,000^2 is 1.2 GB of RGB at level 0; the writer must hold a few tiles, not the image.
    path = tmp_path / "20k.tiff"
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path)], capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["peak_mb"] < 400, report
    assert len(report["levels"]) == 5
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.dimensions == (20_000, 20_000) and slide.level_count == 5
