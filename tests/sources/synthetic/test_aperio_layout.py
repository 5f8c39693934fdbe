"""Aperio-like synthetic slides: 1x/4x/16x pages, RGB-coded abbreviated JPEG, Aperio description."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from wsi_pipeline.sources.raw_jpeg import DHT, DQT, EOI, SOI, SOS, jpeg_header_segments
from wsi_pipeline.sources.synthetic import aperio as aperio_module
from wsi_pipeline.sources.synthetic import write_aperio_like_slide, write_large_slide
from wsi_pipeline.sources.synthetic.large import aperio_n_levels, default_n_levels

SIZE, SEED = 4096, 2


@pytest.fixture(scope="module")
def aperio(tmp_path_factory):
    """An Aperio-like slide and its truth."""
    path = tmp_path_factory.mktemp("aperio") / "slide.svs"
    truth = write_aperio_like_slide(path, SIZE, SIZE, seed=SEED)
    return str(path), truth


@pytest.fixture(scope="module")
def ycbcr_twin(tmp_path_factory):
    """The same slide (seed, pages) coded as YCbCr 4:2:0 JPEG under the generic-TIFF layout."""
    path = tmp_path_factory.mktemp("aperio") / "twin.tiff"
    write_large_slide(path, SIZE, SIZE, seed=SEED, tile=256, n_levels=3, level_downsample=4)
    return str(path)


def _rgb(path: str, level: int, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    with openslide.OpenSlide(path) as slide:
        return np.asarray(slide.read_region(location, level, size).convert("RGB"), dtype=np.float64)


def _tile_bytes(path, page) -> list[bytes]:
    with open(path, "rb") as fh:
        tiles = []
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            fh.seek(offset)
            tiles.append(fh.read(count))
    return tiles


def test_openslide_reads_it_as_aperio(aperio):
    path, truth = aperio
    with openslide.OpenSlide(path) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
        assert slide.level_dimensions == ((4096, 4096), (1024, 1024), (256, 256))
        assert slide.level_downsamples == (1.0, 4.0, 16.0)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == 0.25
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == 0.25
        assert slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "40"
        assert list(slide.associated_images) == ["thumbnail"]
        assert slide.associated_images["thumbnail"].size == (1024, 1024)
    assert truth.level_dimensions == ((4096, 4096), (1024, 1024), (256, 256))
    assert truth.level_downsample == 4 and truth.n_levels == 3 and truth.mpp == 0.25


def test_page_layout_and_description(aperio):
    path, _ = aperio
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert [(p.shape[:2], p.is_tiled) for p in pages] == [
            ((4096, 4096), True),
            ((1024, 1024), False),  # thumbnail, as Aperio puts it
            ((1024, 1024), True),
            ((256, 256), True),
        ]
        assert pages[0].description == (
            "Aperio Image Library v12.0.0 \r\n4096x4096 [0,0 4096x4096] (256x256) JPEG/RGB Q=80|AppMag = 40|MPP = 0.25"
        )
        for page in (pages[0], pages[2], pages[3]):
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert (page.tilewidth, page.tilelength) == (256, 256)


def test_tiles_are_abbreviated_rgb_coded_without_colour_markers(aperio):
    path, _ = aperio
    with tifffile.TiffFile(path) as tif:
        for page in (p for p in tif.pages if p.is_tiled):
            tables = page.jpegtables
            assert tables[:2] == SOI and tables[-2:] == EOI
            assert {s.marker for s in jpeg_header_segments(tables)} == {DQT, DHT, 0xD9}
            for tile in _tile_bytes(path, page):
                segments = jpeg_header_segments(tile)
                assert [s.marker for s in segments] == [0xC0, SOS]  # no APP14, DQT, DHT or JFIF
                sof = tile[segments[0].start : segments[0].end]
                # Components numbered 0, 1, 2, each sampled 1x1 (no chroma subsampling).
                assert sof[10:19] == bytes([0, 0x11, 0, 1, 0x11, 0, 2, 0x11, 0])
                assert tile.endswith(EOI)


def test_colours_match_the_ycbcr_coded_twin(aperio, ycbcr_twin):
    path, _ = aperio
    # A window with tissue and glass; only the JPEG coding differs between the two files.
    location, size = (512, 2048), (1024, 1536)
    rgb = _rgb(path, 0, location, size)
    ycc = _rgb(ycbcr_twin, 0, location, size)
    assert 180 < rgb.mean() < 225  # tissue is there
    assert np.abs(rgb - ycc).mean() < 3.0  # measured 1.85
    assert np.abs(rgb.reshape(-1, 3).mean(axis=0) - ycc.reshape(-1, 3).mean(axis=0)).max() < 0.5
    # H&E: green absorbed most, in both.
    for image in (rgb, ycc):
        red, green, blue = image.reshape(-1, 3).mean(axis=0)
        assert green < red - 5 and green < blue - 5


def test_tifffile_decodes_the_rgb_coded_tiles_like_openslide(aperio):
    path, _ = aperio
    with tifffile.TiffFile(path) as tif:
        level1 = tif.pages[2].asarray().astype(np.float64)
    assert np.abs(level1 - _rgb(path, 1, (0, 0), (1024, 1024))).max() == 0


def test_four_x_pages_are_the_two_x_levels(tmp_path):
    # Page k of the 4x pyramid is level 2k of the 2x pyramid of the same seed: same tile bytes.
    two, four = tmp_path / "two.tiff", tmp_path / "four.tiff"
    write_large_slide(two, 2048, 1536, seed=5, tile=256, n_levels=3)
    write_large_slide(four, 2048, 1536, seed=5, tile=256, n_levels=2, level_downsample=4)
    with tifffile.TiffFile(two) as a, tifffile.TiffFile(four) as b:
        assert len(b.pages) == 2
        for page_a, page_b in ((a.pages[0], b.pages[0]), (a.pages[2], b.pages[1])):
            assert page_a.shape == page_b.shape
            assert page_a.resolution == page_b.resolution  # mpp of the page: 0.25 * 4**k
            assert _tile_bytes(two, page_a) == _tile_bytes(four, page_b)


def test_same_arguments_same_bytes(tmp_path):
    first, second = tmp_path / "a.svs", tmp_path / "b.svs"
    write_aperio_like_slide(first, 1500, 1100, seed=4)
    write_aperio_like_slide(second, 1500, 1100, seed=4, workers=2)
    assert first.read_bytes() == second.read_bytes()
    write_aperio_like_slide(tmp_path / "c.svs", 1500, 1100, seed=5)
    assert (tmp_path / "c.svs").read_bytes() != first.read_bytes()


def test_flat_aperio_slide(tmp_path):
    path = tmp_path / "flat.svs"
    truth = write_aperio_like_slide(path, 2000, 1200, flat=True, seed=1)
    assert truth.level_dimensions == ((2000, 1200),)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
        assert slide.level_count == 1
        assert slide.associated_images["thumbnail"].size == (1000, 600)


def test_level_counts():
    assert aperio_n_levels(4096, 4096, 256) == 3
    assert aperio_n_levels(8192, 8192, 256) == 3
    assert aperio_n_levels(150_000, 100_000, 256) == 3
    assert aperio_n_levels(2000, 1000, 256) == 2  # 500 px, then 125 < one tile
    assert aperio_n_levels(900, 600, 256) == 1
    assert default_n_levels(8192, 8192, factor=4) == 3
    assert default_n_levels(150_000, 100_000, factor=4) == 5


def test_unshared_tables_fail_loudly(tmp_path, monkeypatch):
    real = aperio_module.encode_rgb_coded_jpeg
    calls = {"n": 0}

    def drifting_quality(pixels, quality):
        calls["n"] += 1
        return real(pixels, quality if calls["n"] < 4 else quality - 10)

    from wsi_pipeline.sources.synthetic import large

    monkeypatch.setattr(large, "encode_rgb_coded_jpeg", drifting_quality)
    with pytest.raises(RuntimeError, match="different tables"):
        write_aperio_like_slide(tmp_path / "bad.svs", 2048, 2048)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"level_downsample": 3}, "level_downsample"), ({"jpeg_colour": "cmyk"}, "jpeg_colour"), ({"level_downsample": 4, "n_levels": 7}, "n_levels")],
)
def test_rejects_unusable_layout_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_large_slide(tmp_path / "s.tiff", 2000, 2000, **kwargs)
