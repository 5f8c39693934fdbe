"""The OpenSlide source: formats, physical scale, batched reads, streamed thumbnails, clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources import wsi as wsi_module
from wsi_pipeline.sources.fingerprint import slide_uid
from wsi_pipeline.sources.protocol import TileSource, mpp_disagreement, require_mpp
from wsi_pipeline.sources.synthetic import (
    SyntheticSlideSpec,
    render_slide,
    write_pyramidal_tiff,
)
from wsi_pipeline.sources.wsi import OpenSlideSource, flatten_on_white


def write_tiff(path, image, *, tile=256, mpp=None, unit="CENTIMETER", levels=1):
    """A tiled JPEG TIFF, pyramidal when ``levels`` > 1, with or without resolution tags."""
    if mpp is not None and unit == "CENTIMETER" and levels > 1:
        write_pyramidal_tiff(path, image, mpp, levels, tile=tile)
        return path
    per_unit = None if mpp is None else (1e4 if unit == "CENTIMETER" else 25400) / mpp
    kwargs = {} if per_unit is None else {"resolution": (per_unit, per_unit), "resolutionunit": unit}
    tifffile.imwrite(path, image, tile=(tile, tile), photometric="rgb", compression="jpeg", **kwargs)
    return path


@pytest.fixture(scope="module")
def tissue_image():
    rgb, _ = render_slide(SyntheticSlideSpec(width=2048, height=1536, mpp=0.25, positive=True, seed=3, n_levels=3))
    return rgb


@pytest.fixture()
def tiff_without_mpp(tmp_path):
    return write_tiff(tmp_path / "no_mpp.tiff", np.full((512, 512, 3), 200, dtype=np.uint8))


# -- scale ---------------------------------------------------------------------------------------
def test_slide_without_mpp_opens_but_cannot_be_tiled(tiff_without_mpp):
    with OpenSlideSource(tiff_without_mpp) as source:
        assert source.mpp is None and source.metadata_mpp is None and source.dimensions == (512, 512)
        with pytest.raises(WSIPipelineError, match="µm/px") as caught:
            require_mpp(source)
    message = caught.value.format()
    assert str(tiff_without_mpp) in message and "'mpp' column" in message


def test_mpp_override_is_used_and_reported(tiff_without_mpp):
    with OpenSlideSource(tiff_without_mpp, mpp_override=0.25) as source:
        assert source.mpp == 0.25 and source.metadata_mpp is None and require_mpp(source) == 0.25


@pytest.mark.parametrize("unit", ["CENTIMETER", "INCH"])
def test_resolution_tags_give_mpp_in_either_unit(tmp_path, unit):
    path = write_tiff(tmp_path / f"{unit}.tiff", np.full((512, 512, 3), 200, np.uint8), mpp=0.5, unit=unit)
    with OpenSlideSource(path) as source:
        assert source.mpp == pytest.approx(0.5) == source.metadata_mpp
        assert source.vendor == "generic-tiff" and source.objective_power is None


def test_override_far_from_metadata_is_a_warning(tmp_path):
    path = write_tiff(tmp_path / "s.tiff", np.full((512, 512, 3), 200, np.uint8), mpp=0.5)
    with OpenSlideSource(path, mpp_override=0.52) as close, OpenSlideSource(path, mpp_override=0.25) as far:
        assert mpp_disagreement(close) is None
        warning = mpp_disagreement(far)
    assert warning is not None and "0.25" in warning and "0.5" in warning and "50%" in warning and str(path) in warning


def test_bad_override_is_a_clear_error(tiff_without_mpp):
    with pytest.raises(WSIPipelineError, match="not a positive number"):
        OpenSlideSource(tiff_without_mpp, mpp_override=-1.0)


# -- formats and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [128, 256, 512])
def test_pyramidal_tiffs_of_several_tile_sizes_open_with_every_level(tmp_path, tissue_image, tile):
    path = write_tiff(tmp_path / "p.tiff", tissue_image, tile=tile, mpp=0.25, levels=3)
    with OpenSlideSource(path) as source:
        assert isinstance(source, TileSource)
        assert source.level_dimensions == ((2048, 1536), (1024, 768), (512, 384))
        assert source.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert source.properties["openslide.level[0].tile-width"] == str(tile)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WSIPipelineError, match="slide file not found"):
        OpenSlideSource(tmp_path / "nope.svs")


def test_untiled_tiff_names_the_conversion(tmp_path):
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, np.full((64, 64, 3), 200, np.uint8), photometric="rgb")
    with pytest.raises(WSIPipelineError) as caught:
        OpenSlideSource(path)
    assert "strips, not tiles" in caught.value.format() and "vips tiffsave" in caught.value.format()


def test_unreadable_real_slides_are_clear_errors(shared_slides):
    for name, expected in (("broken.svs", "Unsupported or missing image file"), ("unopenable.tiff", "Unsupported TIFF compression")):
        with pytest.raises(WSIPipelineError, match=expected) as caught:
            OpenSlideSource(shared_slides / name)
        assert name in caught.value.format()


def test_real_aperio_slide(shared_slides):
    with OpenSlideSource(shared_slides / "CMU-1-Small-Region.svs") as source:
        assert source.vendor == "aperio" and source.mpp == pytest.approx(0.499) and source.objective_power == 20
        assert source.dimensions == (2220, 2967) and len(source.level_dimensions) == 1
        thumb, scale = source.thumbnail(8.0)
    downsample = 8.0 / 0.499
    width, height = round(2220 / downsample), round(2967 / downsample)
    assert thumb.shape == (height, width, 3) and scale == pytest.approx(2220 / width)


def test_real_dicom_series_opens_from_a_file_or_its_folder(shared_slides, tmp_path):
    folder = shared_slides / "dicom-boxes"
    with OpenSlideSource(folder / "boxes_0.dcm") as by_file, OpenSlideSource(folder) as by_folder:
        assert by_file.vendor == by_folder.vendor == "dicom"
        assert by_file.mpp == pytest.approx(0.499) and by_file.dimensions == (16, 16)
        tiles = next(by_file.read_tiles(np.array([[0, 0]]), 16, 16, 1))
        assert tiles.shape == (1, 16, 16, 3)
        uid = by_file.uid
    # The fingerprint covers the whole series: change another instance and the uid changes.
    copy = tmp_path / "series"
    shutil.copytree(folder, copy)
    with OpenSlideSource(copy / "boxes_0.dcm") as same:
        assert same.uid == uid
    other = copy / "boxes_1.dcm"
    other.chmod(0o644)
    other.write_bytes(other.read_bytes() + b"\0")
    with OpenSlideSource(copy / "boxes_0.dcm") as changed:
        assert changed.uid != uid


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WSIPipelineError, match="no DICOM"):
        OpenSlideSource(tmp_path)


# -- pixels --------------------------------------------------------------------------------------
def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgb = flatten_on_white(Image.fromarray(rgba, "RGBA"))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[1, 1].tolist() == [255, 255, 255]


def test_read_tiles_batches_in_order_with_edge_tiles_padded_white(tmp_path, tissue_image):
    path = write_tiff(tmp_path / "p.tiff", tissue_image, mpp=0.25, levels=3)
    coords = np.array([[0, 0], [512, 256], [1024, 1024], [1900, 1400]])  # the last runs past both edges
    with OpenSlideSource(path) as source:
        batches = list(source.read_tiles(coords, 256.0, 128, batch_size=3))
        single = source.read_region(512, 256, 1, 128, 128)
    assert [b.shape for b in batches] == [(3, 128, 128, 3), (1, 128, 128, 3)]
    np.testing.assert_array_equal(batches[0][1], single)  # 0.5 µm/px from the 2x level, no resampling
    edge = batches[1][0]
    inside = (2048 - 1900) // 2  # level-1 px of the slide in the edge tile
    assert (edge[:, inside + 1 :] == 255).all() and (edge[(1536 - 1400) // 2 + 1 :, :] == 255).all()
    assert (edge[:inside, :inside] < 250).any()


def test_tiles_at_half_resolution_agree_with_and_without_a_matching_level(tmp_path, tissue_image):
    """0.5 µm/px tiles of a 0.25 µm/px slide: read from its 0.5 level, or from level 0 and shrunk."""
    pyramid = write_tiff(tmp_path / "pyramid.tiff", tissue_image, mpp=0.25, levels=3)
    flat = write_tiff(tmp_path / "flat.tiff", tissue_image, mpp=0.25, levels=1)
    coords = np.array([[0, 0], [256, 512], [1024, 768], [1536, 1024]])
    with OpenSlideSource(pyramid) as with_level, OpenSlideSource(flat) as without:
        assert len(with_level.level_dimensions) == 3 and len(without.level_dimensions) == 1
        a = next(with_level.read_tiles(coords, 512.0, 256, 8)).astype(float)
        b = next(without.read_tiles(coords, 512.0, 256, 8)).astype(float)
    assert a.std() > 10  # real content, not glass
    assert np.abs(a - b).mean() < 3.0  # JPEG noise only (the synthetic glass carries per-pixel grain)
    assert np.abs(a.mean(axis=(0, 1, 2)) - b.mean(axis=(0, 1, 2))).max() < 0.5  # no colour or scale shift


def test_thumbnail_is_streamed_in_bands_when_a_level_is_large(tmp_path, tissue_image, monkeypatch):
    flat = write_tiff(tmp_path / "flat.tiff", tissue_image, mpp=0.25, levels=1)
    with OpenSlideSource(flat) as source:
        whole, scale = source.thumbnail(2.0)
        budget = 64 * 1024
        monkeypatch.setattr(wsi_module, "THUMBNAIL_READ_PIXELS", budget)
        reads = []
        original = source.read_region

        def counting(x, y, level, width, height):
            reads.append(width * height)
            return original(x, y, level, width, height)

        monkeypatch.setattr(source, "read_region", counting)
        streamed, streamed_scale = source.thumbnail(2.0)
    assert streamed.shape == whole.shape == (192, 256, 3) and streamed_scale == scale == 8.0
    assert len(reads) > 10 and max(reads) <= 2 * budget  # never the whole level at once
    assert np.abs(streamed.astype(float) - whole).mean() < 1.5


def test_fingerprint_follows_content_not_path(tmp_path):
    first = tmp_path / "a.bin"
    first.write_bytes(b"x" * 3_000_000)
    second = tmp_path / "sub" / "b.bin"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    assert slide_uid(first) == slide_uid(second)
    changed = tmp_path / "c.bin"
    changed.write_bytes(b"x" * 2_999_999 + b"y")
    assert slide_uid(changed) != slide_uid(first)
    assert slide_uid(first, {"openslide.mpp-x": "0.25"}) != slide_uid(first, {"openslide.mpp-x": "0.5"})
    companion = tmp_path / "data.dat"
    companion.write_bytes(b"1")
    with_companion = slide_uid(first, companions=[companion])
    companion.write_bytes(b"2")
    assert with_companion != slide_uid(first) and with_companion != slide_uid(first, companions=[companion])
