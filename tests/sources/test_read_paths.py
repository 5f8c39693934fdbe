"""OpenSlideSource.read_tiles: strips, the raw JPEG path, its per-slide check and the fallback.

Every path must give the pixels of the reference (OpenSlide ``read_region`` per tile, then the
same area filter) within resampling tolerance; the raw path is used only after matching OpenSlide
on the slide's first tiles.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.sources import raw_jpeg
from wsi_pipeline.sources.protocol import ReadOptions
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import write_aperio_like_slide, write_large_slide

OPENSLIDE = ReadOptions(reader="openslide")


@pytest.fixture(scope="module")
def aperio_like(tmp_path_factory) -> Path:
    """A 40x slide laid out as Aperio writes it: levels 1x/4x/16x, RGB-coded JPEG with shared tables."""
    path = tmp_path_factory.mktemp("aperio") / "aperio-like.svs"
    write_aperio_like_slide(path, 4096, 4096, seed=1)
    return path


@pytest.fixture(scope="module")
def ycbcr_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ycbcr") / "ycbcr.tiff"
    write_large_slide(path, 3072, 2048, mpp=0.25, tile=256, seed=2, tissue_fraction=0.6)
    return path


def tile_grid(width: int, height: int, side: int) -> np.ndarray:
    return np.array([(x, y) for y in range(0, height - side // 2, side) for x in range(0, width - side // 2, side)], dtype=np.int64)


def reference_tiles(path: Path, coords: np.ndarray, side: int, tile_px: int) -> np.ndarray:
    with open_source("wsi", path, read_options=OPENSLIDE) as source:
        return np.stack([source.read_tile(int(x), int(y), side, tile_px) for x, y in coords])


def read_all(path: Path, coords: np.ndarray, side: int, tile_px: int, options: ReadOptions) -> tuple[np.ndarray, str]:
    with open_source("wsi", path, read_options=options) as source:
        tiles = np.concatenate(list(source.read_tiles(coords, side, tile_px, 7)))
        return tiles, source.read_path


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def test_openslide_strips_equal_tile_by_tile_reads(ycbcr_slide):
    coords = tile_grid(3072, 2048, 512)[::3]  # gaps: several strips per row
    tiles, read_path = read_all(ycbcr_slide, coords, 512, 256, ReadOptions(reader="openslide", workers=3))
    assert read_path == "openslide"
    np.testing.assert_array_equal(tiles, reference_tiles(ycbcr_slide, coords, 512, 256))


@pytest.mark.parametrize("scaled", [False, True])
def test_raw_path_on_an_aperio_layout_slide_matches_openslide(aperio_like, scaled):
    coords = tile_grid(4096, 4096, 512)
    tiles, read_path = read_all(aperio_like, coords, 512, 256, ReadOptions(workers=2, scaled_decode=scaled))
    assert read_path.startswith("raw JPEG"), read_path
    reference = reference_tiles(aperio_like, coords, 512, 256)
    assert tiles.shape == reference.shape == (len(coords), 256, 256, 3)
    if not scaled:
        assert mean_abs(tiles, reference) <= 0.05  # same decoder, same area filter
    else:
        # Half-scale decode in the DCT domain is another (good) resampling of the same pixels.
        assert mean_abs(tiles, reference) < 3.0
        np.testing.assert_allclose(tiles.mean(axis=(0, 1, 2)), reference.mean(axis=(0, 1, 2)), atol=1.0)


def test_a_decoder_that_gets_the_colours_wrong_is_caught_and_openslide_used(aperio_like, monkeypatch):
    real_open = raw_jpeg.RawJpegPyramid.open.__func__

    def without_colour_fix(cls, path, level_dimensions, **kwargs):
        return real_open(cls, path, level_dimensions, colour_fix=False)

    monkeypatch.setattr(raw_jpeg.RawJpegPyramid, "open", classmethod(without_colour_fix))
    coords = tile_grid(4096, 4096, 512)[:12]
    tiles, read_path = read_all(aperio_like, coords, 512, 256, ReadOptions())
    assert read_path.startswith("openslide (raw JPEG pixels differed"), read_path
    np.testing.assert_array_equal(tiles, reference_tiles(aperio_like, coords, 512, 256))


def test_reduced_levels_are_read_raw_too(aperio_like):
    coords = tile_grid(4096, 4096, 1024)  # 2 µm/px x 256 px: from the 4x level (1 µm/px)
    tiles, read_path = read_all(aperio_like, coords, 1024, 256, ReadOptions())
    assert read_path.startswith("raw JPEG")
    assert mean_abs(tiles, reference_tiles(aperio_like, coords, 1024, 256)) < 3.0


def test_files_without_raw_jpeg_tiles_say_why_and_read_through_openslide(tmp_path, shared_slides):
    dicom = shared_slides / "dicom-boxes"
    with open_source("wsi", dicom) as source:
        coords = np.array([[0, 0], [8, 0]])
        tiles = np.concatenate(list(source.read_tiles(coords, 8, 8, 2)))
        assert source.read_path.startswith("openslide (raw JPEG path unavailable:")
        np.testing.assert_array_equal(tiles[1], source.read_tile(8, 0, 8, 8))


def test_real_aperio_slide_reads_raw_and_matches_openslide(shared_slides):
    path = shared_slides / "CMU-1-Small-Region.svs"
    coords = tile_grid(2220, 2967, 256)[40:80]  # tiles of 256 on 240-px stored tiles: unaligned
    with open_source("wsi", path) as source:
        tiles = np.concatenate(list(source.read_tiles(coords, 256, 256, 16)))
        assert source.read_path.startswith("raw JPEG"), source.read_path
    assert mean_abs(tiles, reference_tiles(path, coords, 256, 256)) <= 0.05


@pytest.mark.slow
def test_memory_stays_bounded_on_a_long_slide(tmp_path):
    """Reading every tile of a slide 8x longer costs about the same peak memory."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from wsi_pipeline.sources.protocol import ReadOptions
        from wsi_pipeline.sources.registry import open_source

        with open_source("wsi", sys.argv[1], read_options=ReadOptions(workers=2)) as source:
            width, height = source.dimensions
            coords = np.array([(x, y) for y in range(0, height - 511, 512) for x in range(0, width - 511, 512)])
            total = sum(len(b) for b in source.read_tiles(coords, 512, 256, 64))
        peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
        print(total, int(peak) // 1024)
        """
    )
    peaks = {}
    for name, height in (("short", 4096), ("long", 32768)):
        path = tmp_path / f"{name}.svs"
        write_aperio_like_slide(path, 4096, height, seed=3, workers=2)
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
        total, peak = map(int, done.stdout.split())
        assert total == (4096 // 512) * (height // 512)
        peaks[name] = peak
    assert peaks["long"] <= 1.25 * peaks["short"] + 20, peaks


def test_tiles_decoded_by_the_device_decoder_arrive_as_tensors_with_the_same_pixels(ycbcr_slide):
    """The GPU path's code (torch decode, assembly, area resize) runs here with torchvision on the CPU."""
    import torch

    coords = tile_grid(3072, 2048, 512)[:10]
    with open_source("wsi", ycbcr_slide, read_options=ReadOptions(decoder="gpu", device="cpu")) as source:
        batches = list(source.read_tiles(coords, 512, 256, 4))
        assert "decoded on cpu" in source.read_path, source.read_path
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.uint8 for b in batches)
    tiles = torch.cat(batches).numpy()
    assert mean_abs(tiles, reference_tiles(ycbcr_slide, coords, 512, 256)) < 0.6


def test_a_device_decoder_with_wrong_colours_falls_back_to_the_cpu_decoder(aperio_like, monkeypatch):
    """What nvJPEG does to Aperio's RGB-coded JPEG (ignores the Adobe marker), simulated on the CPU."""
    real = raw_jpeg.decode_streams_torch

    def as_if_ycbcr(streams, device):
        return [tile.flip(-1) for tile in real(streams, device)]  # any colour error will do

    monkeypatch.setattr(raw_jpeg, "decode_streams_torch", as_if_ycbcr)
    coords = tile_grid(4096, 4096, 512)[:6]
    with open_source("wsi", aperio_like, read_options=ReadOptions(decoder="gpu", device="cpu", scaled_decode=False)) as source:
        tiles = np.concatenate(list(source.read_tiles(coords, 512, 256, 4)))
        assert source.read_path.startswith("raw JPEG") and "CPU decoder used" in source.read_path, source.read_path
    assert mean_abs(tiles, reference_tiles(aperio_like, coords, 512, 256)) <= 0.05


def test_a_missing_device_decoder_is_noted_and_the_cpu_decoder_used(ycbcr_slide, monkeypatch):
    def missing(streams, device):
        raise ImportError("no module named 'nvidia.nvimgcodec'")

    monkeypatch.setattr(raw_jpeg, "decode_streams_torch", missing)
    with open_source("wsi", ycbcr_slide, read_options=ReadOptions(decoder="gpu", device="cpu")) as source:
        batch = next(iter(source.read_tiles(tile_grid(3072, 2048, 512)[:2], 512, 256, 2)))
        assert isinstance(batch, np.ndarray) and "device decoder unavailable: ImportError" in source.read_path
