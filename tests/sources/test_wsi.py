"""The OpenSlide source: physical scale, errors a user can fix, transparent areas."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.fingerprint import slide_uid
from wsi_pipeline.sources.wsi import WholeSlide, flatten_on_white


@pytest.fixture()
def tiff_without_mpp(tmp_path):
    path = tmp_path / "no_mpp.tiff"
    image = np.full((512, 512, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    return path


def test_slide_without_mpp_names_the_override_column(tiff_without_mpp):
    with pytest.raises(WSIPipelineError, match="mpp") as caught:
        WholeSlide(tiff_without_mpp)
    assert str(tiff_without_mpp) in caught.value.format() and "cohort table" in caught.value.format()


def test_mpp_override_is_used(tiff_without_mpp):
    with WholeSlide(tiff_without_mpp, mpp_override=0.25) as slide:
        assert slide.mpp == 0.25 and slide.dimensions == (512, 512)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WSIPipelineError, match="slide file not found"):
        WholeSlide(tmp_path / "nope.svs")


def test_unreadable_real_slides_are_clear_errors(shared_slides):
    for name, expected in (("broken.svs", "Unsupported or missing image file"), ("unopenable.tiff", "Unsupported TIFF compression")):
        with pytest.raises(WSIPipelineError, match=expected) as caught:
            WholeSlide(shared_slides / name)
        assert name in caught.value.format()


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgb = flatten_on_white(Image.fromarray(rgba, "RGBA"))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[1, 1].tolist() == [255, 255, 255]


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
