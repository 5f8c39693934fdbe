"""Writing synthetic slides: OpenSlide compatibility, physical scale, byte reproducibility, atomicity."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.synthetic import (
    SyntheticSlideSpec,
    generate_slide,
    render_slide,
    write_pyramidal_tiff,
)
from wsi_pipeline.sources.synthetic import tiff as tiff_module
from wsi_pipeline.sources.synthetic.tiff import downsample_2x

# Mean absolute difference (grey levels) that JPEG at quality 90 stays well under.
JPEG_TOLERANCE = 6.0


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A non-square positive slide (catches swapped axes), rendered and written."""
    spec = SyntheticSlideSpec(width=1536, height=1024, mpp=0.5, positive=True, seed=3, n_levels=3)
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    truth = generate_slide(spec, path)
    rgb, _ = render_slide(spec)
    return spec, path, rgb, truth


def test_openslide_levels_and_mpp(written):
    spec, path, _, _ = written
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
        assert slide.dimensions == (spec.width, spec.height)
        assert slide.level_count == spec.n_levels >= 3
        assert slide.level_downsamples == pytest.approx([1.0, 2.0, 4.0])
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(spec.mpp, rel=1e-6)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(spec.mpp, rel=1e-6)


@pytest.mark.parametrize("mpp", [0.25, 0.2527, 1.0])
def test_openslide_mpp_other_resolutions(tmp_path, mpp):
    spec = SyntheticSlideSpec(width=512, height=512, mpp=mpp, positive=False, seed=1, n_levels=3)
    path = tmp_path / "s.tiff"
    generate_slide(spec, path)
    with openslide.OpenSlide(str(path)) as slide:
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(mpp, rel=1e-6)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(mpp, rel=1e-6)


def test_openslide_pixels_match_rendered(written):
    _spec, path, rgb, _ = written
    with openslide.OpenSlide(str(path)) as slide:
        level0 = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        level1 = np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]).convert("RGB"))
    assert level0.shape == rgb.shape
    diff0 = np.abs(level0.astype(np.int16) - rgb).mean(axis=(0, 1))
    # Per channel, so a colour-space mix-up (e.g. YCbCr read as RGB) cannot hide in the average.
    assert np.all(diff0 < JPEG_TOLERANCE), diff0
    expected1 = downsample_2x(rgb)
    assert level1.shape == expected1.shape
    assert np.all(np.abs(level1.astype(np.int16) - expected1).mean(axis=(0, 1)) < JPEG_TOLERANCE)


def test_tiled_jpeg_layout(written):
    spec, path, _, _ = written
    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        assert len(pages) == spec.n_levels
        for index, page in enumerate(pages):
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.subfiletype == (1 if index else 0)


def test_same_spec_same_bytes(tmp_path):
    spec = SyntheticSlideSpec(width=768, height=512, mpp=0.5, positive=True, seed=9, n_levels=3)
    generate_slide(spec, tmp_path / "a.tiff")
    generate_slide(spec, tmp_path / "b.tiff")
    assert (tmp_path / "a.tiff").read_bytes() == (tmp_path / "b.tiff").read_bytes()


def test_generate_slide_is_atomic_when_tifffile_fails_midway(tmp_path, monkeypatch):
    spec = SyntheticSlideSpec(width=512, height=512, mpp=0.5, positive=True, seed=0, n_levels=3)
    real_write = tifffile.TiffWriter.write
    calls = []

    def failing_write(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # level 0 is already in the file
            raise RuntimeError("disk vanished")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffWriter, "write", failing_write)
    path = tmp_path / "out" / "slide.tiff"
    with pytest.raises(RuntimeError, match="disk vanished"):
        generate_slide(spec, path)
    assert len(calls) == 2
    assert not path.exists()
    assert list(path.parent.iterdir()) == []  # the temporary file is gone too


def test_generate_slide_is_atomic_when_writer_raises(tmp_path, monkeypatch):
    spec = SyntheticSlideSpec(width=512, height=512, mpp=0.5, positive=False, seed=0, n_levels=3)
    seen = []

    def partial_writer(path, rgb, mpp, n_levels, tile=256, quality=90):
        seen.append(path)
        with open(path, "wb") as handle:
            handle.write(b"II*\x00 half a slide")
        raise KeyboardInterrupt  # also a killed run, not only an Exception

    monkeypatch.setattr(tiff_module, "write_pyramidal_tiff", partial_writer)
    path = tmp_path / "slide.tiff"
    with pytest.raises(KeyboardInterrupt):
        generate_slide(spec, path)
    assert seen and seen[0] != path  # it wrote under another name
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_generate_slide_replaces_an_existing_file(tmp_path):
    spec = SyntheticSlideSpec(width=512, height=512, mpp=0.5, positive=False, seed=0, n_levels=3)
    path = tmp_path / "slide.tiff"
    path.write_bytes(b"stale")
    generate_slide(spec, path)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.dimensions == (512, 512)


def test_generate_slide_unwritable_folder_is_project_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    spec = SyntheticSlideSpec(width=512, height=512, mpp=0.5, positive=False, seed=0, n_levels=3)
    with pytest.raises(WSIPipelineError, match="slide.tiff"):
        generate_slide(spec, blocker / "slide.tiff")


def test_downsample_2x_rounds_and_handles_odd_sizes():
    image = np.array([[[0], [1], [7]], [[1], [1], [9]], [[4], [4], [4]]], dtype=np.uint8)
    out = downsample_2x(image)
    assert out.shape == (2, 2, 1)
    # (0+1+1+1)/4 = 0.75 -> 1; (7+7+9+9)/4 = 8; (4+4+4+4)/4 = 4; edge pixel repeated.
    assert out[:, :, 0].tolist() == [[1, 8], [4, 4]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rgb": np.zeros((64, 64), np.uint8)},
        {"rgb": np.zeros((64, 64, 3), np.float32)},
        {"n_levels": 8},
        {"tile": 100},
        {"quality": 0},
        {"mpp": 0.0},
    ],
)
def test_write_pyramidal_tiff_rejects_bad_arguments(tmp_path, kwargs):
    args = {"rgb": np.zeros((64, 64, 3), np.uint8), "mpp": 0.5, "n_levels": 3} | kwargs
    with pytest.raises(ValueError):
        write_pyramidal_tiff(tmp_path / "x.tiff", **args)
    assert not (tmp_path / "x.tiff").exists()


def test_sizes_that_are_not_multiples_of_the_grid(tmp_path):
    spec = SyntheticSlideSpec(width=1000, height=750, mpp=0.5, positive=True, seed=2, n_levels=3)
    path = tmp_path / "odd.tiff"
    truth = generate_slide(spec, path)
    rgb, _ = render_slide(spec)
    assert truth.tissue_mask.shape == (47, 63)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == ((1000, 750), (500, 375), (250, 188))
        level0 = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    assert np.all(np.abs(level0.astype(np.int16) - rgb).mean(axis=(0, 1)) < JPEG_TOLERANCE)
