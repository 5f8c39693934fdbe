"""Raw JPEG tile reads: same pixels as OpenSlide, DCT scaling, colour trap, refusals, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from wsi_pipeline.sources.raw_jpeg import (
    RawJpegPyramid,
    RawPathUnavailable,
    adobe_app14,
    decode_streams_torch,
    jpeg_header_segments,
)
from wsi_pipeline.sources.synthetic import write_aperio_like_slide, write_large_slide

CMU = "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def cmu(shared_slides: Path) -> str:
    """The real Aperio slide: RGB-coded JPEG, 240-px tiles, one level, stripped thumbnail page."""
    path = shared_slides / CMU
    if not path.is_file():
        pytest.skip(f"real test slide not available: {path} is absent")
    return str(path)


@pytest.fixture(scope="module")
def aperio(tmp_path_factory) -> str:
    """Aperio-like synthetic slide: levels 4096, 1024, 256 (1x/4x/16x), thumbnail page of 1024."""
    path = tmp_path_factory.mktemp("raw") / "aperio.svs"
    write_aperio_like_slide(path, 4096, 4096, seed=2)
    return str(path)


@pytest.fixture(scope="module")
def ycbcr(tmp_path_factory) -> str:
    """Default synthetic slide (YCbCr 4:2:0 JPEG, complete tile streams), odd size, two 2x levels."""
    path = tmp_path_factory.mktemp("raw") / "ycbcr.tiff"
    write_large_slide(path, 2600, 1700, n_levels=2, tile=256, seed=3, tissue_fraction=0.5)
    return str(path)


def _level_dimensions(path: str) -> tuple[tuple[int, int], ...]:
    with openslide.OpenSlide(path) as slide:
        return slide.level_dimensions


def _open(path: str, **kwargs) -> RawJpegPyramid:
    return RawJpegPyramid.open(path, _level_dimensions(path), **kwargs)


def _openslide_rgb(path: str, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
    """OpenSlide's pixels of a level region, transparency flattened on white (as the pipeline does)."""
    with openslide.OpenSlide(path) as slide:
        scale = slide.level_downsamples[level]
        rgba = slide.read_region((round(left * scale), round(top * scale)), level, (width, height))
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _box(rgb: np.ndarray, factor: int) -> np.ndarray:
    size = (rgb.shape[1] // factor, rgb.shape[0] // factor)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))


# -- same pixels as OpenSlide ------------------------------------------------------------------

#: Regions of the CMU slide (2220 x 2967, 240-px tiles): tile-aligned, unaligned, crossing the
#: right/bottom edge (stored edge tiles are padded), and starting above/left of the slide.
CMU_REGIONS = [
    (480, 720, 480, 240),
    (100, 37, 300, 250),
    (2020, 2817, 400, 300),
    (-50, -30, 200, 120),
]


@pytest.mark.parametrize("region", CMU_REGIONS)
def test_real_aperio_slide_matches_openslide_exactly(cmu, region):
    with _open(cmu) as raw:
        pixels = raw.read_region(0, *region)
    expected = _openslide_rgb(cmu, 0, *region)
    assert pixels.shape == expected.shape == (region[3], region[2], 3)
    assert pixels.dtype == np.uint8
    assert _diff(pixels, expected).max() == 0  # same libjpeg-turbo, same colour handling


def test_real_aperio_slide_layout(cmu):
    with _open(cmu) as raw:
        assert raw.tile_size(0) == (240, 240)
        assert raw.level_count == 1
        assert raw.description == "raw JPEG tiles, libjpeg-turbo (RGB-coded, Adobe transform 0 inserted)"
        # Off the slide is white, not black.
        assert (raw.read_region(0, 2220, 0, 64, 64) == 255).all()


@pytest.mark.parametrize(
    "slide, level",
    [("ycbcr", 0), ("ycbcr", 1), ("aperio", 0), ("aperio", 1), ("aperio", 2)],
)
def test_synthetic_slides_match_openslide_exactly(request, slide, level):
    path = request.getfixturevalue(slide)
    width, height = _level_dimensions(path)[level]
    regions = [
        (37, 11, min(300, width - 37), min(260, height - 11)),  # unaligned
        (width - 150, height - 90, 256, 192),  # crossing the right/bottom edge
        (0, 0, min(width, 1100), min(height, 1100)),  # many tiles (the whole of reduced levels)
    ]
    with _open(path) as raw:
        for region in regions:
            expected = _openslide_rgb(path, level, *region)
            assert _diff(raw.read_region(level, *region), expected).max() == 0, region


def test_page_per_level_skips_the_thumbnail_of_the_same_size(aperio):
    # The thumbnail page (stripped, 1024 x 1024) precedes the 1024 x 1024 tiled level 1.
    with tifffile.TiffFile(aperio) as tif:
        assert [(p.shape[:2], p.is_tiled) for p in tif.pages][:3] == [
            ((4096, 4096), True),
            ((1024, 1024), False),
            ((1024, 1024), True),
        ]
    with _open(aperio) as raw:
        assert raw.level_count == 3 and raw.tile_size(1) == (256, 256)


# -- DCT-domain scaled decode -----------------------------------------------------------------


@pytest.mark.parametrize("reduce", [2, 4, 8])
@pytest.mark.parametrize("slide", ["cmu", "aperio", "ycbcr"])
def test_scaled_decode_matches_box_downsampled_openslide(request, slide, reduce):
    path = request.getfixturevalue(slide)
    # Windows with tissue (mean well below glass), checked for these seeds.
    left, top = {"cmu": (512, 768), "aperio": (512, 2560), "ycbcr": (320, 192)}[slide]
    full = _openslide_rgb(path, 0, left, top, 1024, 1024)
    assert full.mean() < 205
    expected = _box(full, reduce)
    with _open(path) as raw:
        reduced = raw.read_region(0, left, top, 1024, 1024, reduce=reduce)
    assert reduced.shape == (1024 // reduce, 1024 // reduce, 3)
    assert _diff(reduced, expected).mean() < 3.0
    channel_means = np.abs(reduced.reshape(-1, 3).mean(axis=0) - expected.reshape(-1, 3).mean(axis=0))
    assert channel_means.max() < 1.0


def test_scaled_decode_at_edges_and_outside(cmu):
    with _open(cmu) as raw:
        full = raw.read_region(0, 2000, 2880, 240, 120)
        half = raw.read_region(0, 2000, 2880, 240, 120, reduce=2)
    assert half.shape == (60, 120, 3)
    # Past the right edge (x >= 2220) is white at both scales; inside agrees with the box average.
    assert (full[:, 220:] == 255).all() and (half[:, 110:] == 255).all()
    assert _diff(half[:, :110], _box(full, 2)[:, :110]).mean() < 3.0


def test_reduce_must_divide_the_region(cmu):
    with _open(cmu) as raw:
        for kwargs in (
            {"left": 1, "top": 0, "width": 64, "height": 64, "reduce": 2},
            {"left": 0, "top": 0, "width": 66, "height": 64, "reduce": 4},
            {"left": 0, "top": 4, "width": 64, "height": 64, "reduce": 8},
            {"left": 0, "top": 0, "width": 64, "height": 64, "reduce": 3},
            {"left": 0, "top": 0, "width": 0, "height": 64, "reduce": 1},
        ):
            with pytest.raises(ValueError):
                raw.read_region(0, **kwargs)
        with pytest.raises(IndexError):
            raw.read_region(1, 0, 0, 64, 64)


# -- colour: the RGB-coded JPEG trap ---------------------------------------------------------


@pytest.mark.parametrize("slide", ["cmu", "aperio"])
def test_without_colour_fix_rgb_coded_tiles_get_wrong_colours(request, slide):
    path = request.getfixturevalue(slide)
    region = (256, 256, 512, 512)
    expected = _openslide_rgb(path, 0, *region)
    with _open(path, colour_fix=False) as raw:
        assert raw.description == "raw JPEG tiles, libjpeg-turbo (RGB-coded, colour fix off)"
        wrong = raw.read_region(0, *region)
        wrong_half = raw.read_region(0, *region, reduce=2)
    assert _diff(wrong, expected).mean() > 20  # measured 47-50: a check against OpenSlide sees it
    assert _diff(wrong_half, _box(expected, 2)).mean() > 20


def test_colour_fix_does_not_touch_ycbcr_tiles(ycbcr):
    with _open(ycbcr) as fixed, _open(ycbcr, colour_fix=False) as plain:
        assert fixed.description == plain.description == "raw JPEG tiles, libjpeg-turbo (YCbCr-coded)"
        assert np.array_equal(fixed.read_region(0, 300, 200, 700, 500), plain.read_region(0, 300, 200, 700, 500))


def test_adobe_segment_layout():
    segment = adobe_app14(0)
    assert segment == b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    assert len(segment) == 2 + 14 and adobe_app14(1)[-1] == 1


def test_pillow_honours_the_adobe_transform_not_just_its_presence(cmu):
    with _open(cmu) as raw:
        stream = raw.jpeg_streams(0, [(3, 4)])[0]
    assert stream.startswith(b"\xff\xd8" + adobe_app14(0))
    as_ycbcr = stream.replace(adobe_app14(0), adobe_app14(1), 1)
    rgb = np.asarray(Image.open(BytesIO(stream)))
    ycc = np.asarray(Image.open(BytesIO(as_ycbcr)))
    assert _diff(rgb, _openslide_rgb(cmu, 0, 3 * 240, 4 * 240, 240, 240)).max() == 0
    assert _diff(rgb, ycc).mean() > 20


# -- complete streams for other decoders ------------------------------------------------------


def test_jpeg_streams_are_complete_and_decode_to_the_region(aperio):
    with _open(aperio) as raw:
        streams = raw.jpeg_streams(0, [(6, 6), (7, 6)])
        region = raw.read_region(0, 6 * 256, 6 * 256, 512, 256)
    for k, stream in enumerate(streams):
        markers = [s.marker for s in jpeg_header_segments(stream)]
        assert markers[0] == 0xEE and 0xDB in markers and 0xC4 in markers and markers[-1] == 0xDA
        assert stream.endswith(b"\xff\xd9")
        decoded = imagecodecs.jpeg8_decode(stream)
        assert np.array_equal(decoded, region[:, k * 256 : (k + 1) * 256])


def test_ycbcr_streams_get_no_adobe_marker(ycbcr):
    with _open(ycbcr) as raw:
        stream = raw.jpeg_streams(1, [(0, 0)])[0]
        with pytest.raises(IndexError):
            raw.jpeg_streams(1, [(99, 0)])
    assert 0xEE not in [s.marker for s in jpeg_header_segments(stream)]


def test_missing_tiles_are_white_like_openslide_flattened(tmp_path):
    path = tmp_path / "holes.tiff"
    write_large_slide(path, 1024, 768, tile=256, flat=True, seed=1, tissue_fraction=0.6)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        counts = list(tag.value)
        counts[5] = 0  # tile (1, 1)
        tag.overwrite(tuple(counts))
    path = str(path)
    with _open(path) as raw:
        pixels = raw.read_region(0, 0, 0, 1024, 768)
        assert raw.jpeg_streams(0, [(1, 1)]) == [b""]
        half = raw.read_region(0, 0, 0, 1024, 768, reduce=2)
    assert (pixels[256:512, 256:512] == 255).all() and (half[128:256, 128:256] == 255).all()
    assert pixels[:256].mean() < 250  # the other tiles are there
    assert _diff(pixels, _openslide_rgb(path, 0, 0, 0, 1024, 768)).max() == 0


# -- threads ----------------------------------------------------------------------------------


def test_threads_read_the_same_pixels_as_serial_reads(aperio):
    rng = np.random.default_rng(0)
    jobs = []
    for k in range(32):
        level = k % 3
        reduce = (1, 2, 4)[k % 3] if level == 0 else 1
        size = 256 if level < 2 else 128
        left, top = (int(v) * reduce for v in rng.integers(-4, 4096 // (4**level) // reduce, size=2))
        jobs.append((level, left, top, size, size, reduce))
    with _open(aperio) as raw:
        serial = [raw.read_region(*job) for job in jobs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(lambda job: raw.read_region(*job), jobs))
    for job, a, b in zip(jobs, serial, parallel):
        assert np.array_equal(a, b), job


def test_closed_pyramid_refuses_reads(ycbcr):
    raw = _open(ycbcr)
    raw.close()
    raw.close()
    with pytest.raises(ValueError, match="closed"):
        raw.read_region(0, 0, 0, 16, 16)


# -- refusals, with reasons -------------------------------------------------------------------


def test_untiled_tiff_is_refused(tmp_path):
    path = tmp_path / "strips.tiff"
    tifffile.imwrite(path, np.zeros((300, 200, 3), np.uint8), photometric="rgb", compression="jpeg")
    with pytest.raises(RawPathUnavailable, match=r"level 0 \(200x300\) is stored in strips, not tiles"):
        RawJpegPyramid.open(path, [(200, 300)])


def test_deflate_tiled_tiff_is_refused(tmp_path):
    path = tmp_path / "deflate.tiff"
    tifffile.imwrite(path, np.zeros((512, 512, 3), np.uint8), photometric="rgb", tile=(256, 256), compression="zlib")
    with pytest.raises(RawPathUnavailable, match=r"compressed with ADOBE_DEFLATE \(8\), not JPEG"):
        RawJpegPyramid.open(path, [(512, 512)])


def test_lossless_jpeg_tiles_are_refused(tmp_path):
    path = tmp_path / "lossless.tiff"
    tile = bytes(imagecodecs.jpeg8_encode(np.full((256, 256, 3), 90, np.uint8), lossless=True, colorspace="RGB", outcolorspace="RGB"))
    tifffile.imwrite(
        path,
        iter([tile] * 4),
        shape=(512, 512, 3),
        dtype=np.uint8,
        tile=(256, 256),
        photometric="rgb",
        compression="jpeg",
        compressionargs={"outcolorspace": "rgb"},
        subsampling=(1, 1),
    )
    with pytest.raises(RawPathUnavailable, match="lossless JPEG"):
        RawJpegPyramid.open(path, [(512, 512)])


def test_non_tiff_files_are_refused(tmp_path, shared_slides):
    png = tmp_path / "image.png"
    Image.new("RGB", (64, 64)).save(png)
    with pytest.raises(RawPathUnavailable, match="not a TIFF file tifffile can parse"):
        RawJpegPyramid.open(png, [(64, 64)])
    dicom = shared_slides / "dicom-boxes"
    with pytest.raises(RawPathUnavailable, match="is a folder"):
        RawJpegPyramid.open(dicom, [(64, 64)])
    for dcm in sorted(dicom.iterdir())[:1]:
        with pytest.raises(RawPathUnavailable, match="not a TIFF"):
            RawJpegPyramid.open(dcm, [(64, 64)])
    with pytest.raises(RawPathUnavailable, match="cannot read absent.svs"):
        RawJpegPyramid.open(tmp_path / "absent.svs", [(64, 64)])


def test_level_without_a_page_of_its_size_is_refused(ycbcr):
    with pytest.raises(RawPathUnavailable, match=r"level 1 \(1000x1000\) has no TIFF page of that size"):
        RawJpegPyramid.open(ycbcr, [(2600, 1700), (1000, 1000)])


# -- torch decoding (torchvision on CPU here; nvImageCodec/nvJPEG on CUDA) --------------------


@pytest.fixture(scope="module")
def torch_loaded():
    """torch and torchvision, imported once (a few seconds) outside the timed tests."""
    pytest.importorskip("torchvision")
    return pytest.importorskip("torch")


def test_torch_read_matches_on_ycbcr(ycbcr, torch_loaded):
    with _open(ycbcr) as raw:
        tensor = raw.read_region_torch(0, 200, 100, 600, 500, "cpu")
        expected = raw.read_region(0, 200, 100, 600, 500)
    assert tuple(tensor.shape) == (500, 600, 3) and tensor.dtype == torch_loaded.uint8
    assert _diff(tensor.numpy(), expected).max() <= 1


def test_torch_cpu_honours_the_adobe_marker_on_rgb_coded_tiles(cmu, torch_loaded):
    # torchvision's CPU decoder is libjpeg-turbo, which follows the inserted marker: same pixels.
    # nvJPEG (torchvision on CUDA) ignores it; that trap needs a GPU to show and is caught by the
    # per-slide colour check, not here.
    with _open(cmu) as raw:
        tensor = raw.read_region_torch(0, 100, 37, 500, 500, "cpu")
        expected = raw.read_region(0, 100, 37, 500, 500)
    with _open(cmu, colour_fix=False) as plain:
        wrong = decode_streams_torch(plain.jpeg_streams(0, [(1, 1)]), "cpu")[0]
    assert _diff(tensor.numpy(), expected).max() == 0
    assert _diff(wrong.numpy(), expected[203:443, 140:380]).mean() > 20
