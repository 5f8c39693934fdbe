"""The QC picture: size, tile boxes, tissue contour, pen, caption band and atomic save."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.tiling.overlay import (
    CAPTION_BACKGROUND_RGB,
    PEN_RGB,
    TILE_RGB,
    TISSUE_RGB,
    qc_picture,
    save_qc_picture,
)

PINK = (240, 200, 220)


def slide_thumbnail(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), PINK, dtype=np.uint8)


def where_colour(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return (picture == np.array(colour, dtype=np.uint8)).all(axis=-1)


@pytest.fixture
def scene():
    """A 3000 × 2000 level-0 slide: thumbnail at 10 px/px, drawn at long side 600 (5 level-0 px per picture px).

    Tissue covers level-0 x 200-2800, y 200-1800, i.e. picture x 40-559, y 40-359.
    """
    thumbnail = slide_thumbnail(200, 300)
    tissue = np.zeros((100, 150), dtype=bool)  # at 20 level-0 px per mask px
    tissue[10:90, 10:140] = True
    return thumbnail, tissue


@pytest.mark.parametrize(("height", "width"), [(100, 150), (2000, 3000)])
def test_long_side_is_about_1000_for_tiny_and_large_thumbnails(height, width):
    picture = qc_picture(slide_thumbnail(height, width), 4.0, np.ones((10, 10), bool), 4.0 * width / 10, np.zeros((0, 2)), 256.0)
    assert abs(picture.width - 1000) <= 1
    assert abs(picture.height - 667) <= 1  # aspect ratio kept, no caption band


def test_portrait_slide_long_side_is_its_height():
    picture = qc_picture(slide_thumbnail(300, 120), 8.0, np.ones((30, 12), bool), 80.0, np.zeros((0, 2)), 256.0)
    assert abs(picture.height - 1000) <= 1 and abs(picture.width - 400) <= 1


def test_kept_tile_box_is_drawn_where_the_tile_is(scene):
    thumbnail, tissue = scene
    coords = np.array([[1000, 500]])  # picture x 200-249, y 100-149
    picture = np.asarray(qc_picture(thumbnail, 10.0, tissue, 20.0, coords, 250.0, long_side=600))
    assert picture.shape == (400, 600, 3)
    box = where_colour(picture, TILE_RGB)
    for y, x in [(100, 200), (100, 249), (149, 200), (149, 249), (125, 200), (100, 225)]:
        assert box[y, x], (y, x)
    assert not box[125, 225]  # the inside of the box stays the slide
    assert not box[99, 200] and not box[100, 199] and not box[150, 225] and not box[125, 250]
    assert box.sum() == 4 * 50 - 4  # a 50 × 50 px outline and nothing else


@pytest.mark.parametrize("mask_scale", [20.0, 2.5])  # a mask coarser, then finer, than the thumbnail
def test_tissue_contour_lies_on_the_scaled_tissue_boundary(scene, mask_scale):
    thumbnail, coarse = scene
    tissue = coarse if mask_scale == 20.0 else np.kron(coarse, np.ones((8, 8), dtype=bool))
    picture = np.asarray(qc_picture(thumbnail, 10.0, tissue, mask_scale, np.zeros((0, 2)), 250.0, long_side=600))
    contour = where_colour(picture, TISSUE_RGB)
    ys, xs = np.nonzero(contour)
    assert len(ys) > 0
    # Every contour pixel is inside the tissue (x 40-559, y 40-359) and within 2 px of its edge.
    assert xs.min() == 40 and xs.max() == 559 and ys.min() == 40 and ys.max() == 359
    distance_to_edge = np.minimum.reduce([xs - 40, 559 - xs, ys - 40, 359 - ys])
    assert distance_to_edge.max() == 1  # 2 px thick
    assert contour[200, 40] and contour[200, 41] and not contour[200, 42] and not contour[200, 39]


def test_pen_is_hatched_inside_its_area_only(scene):
    thumbnail, tissue = scene
    pen = np.zeros_like(tissue)
    pen[40:60, 60:80] = True  # picture x 240-319, y 160-239
    picture = np.asarray(qc_picture(thumbnail, 10.0, tissue, 20.0, np.zeros((0, 2)), 250.0, pen=pen, long_side=600))
    magenta = where_colour(picture, PEN_RGB)
    ys, xs = np.nonzero(magenta)
    assert xs.min() == 240 and xs.max() == 319 and ys.min() == 160 and ys.max() == 239
    assert 0.2 < magenta[160:240, 240:320].mean() < 0.6  # hatched, not filled


def test_caption_band_is_added_below_the_slide(scene):
    thumbnail, tissue = scene
    lines = ["slide s01 · 0.25 µm/px", "1,204 tiles kept · tissue 85.3 mm²"]
    plain = qc_picture(thumbnail, 10.0, tissue, 20.0, np.zeros((0, 2)), 250.0, long_side=600)
    captioned = qc_picture(thumbnail, 10.0, tissue, 20.0, np.zeros((0, 2)), 250.0, caption=lines, long_side=600)
    assert plain.size == (600, 400)
    assert captioned.width == 600 and captioned.height > 400 + 2 * 12  # two lines of at least 12 px
    band = np.asarray(captioned)[400:]
    assert not where_colour(band, CAPTION_BACKGROUND_RGB).all()  # text was written
    np.testing.assert_array_equal(np.asarray(captioned)[:400], np.asarray(plain))


def test_long_caption_lines_wrap_instead_of_running_off(scene):
    thumbnail, tissue = scene
    line = " ".join(["word"] * 60)
    one = qc_picture(thumbnail, 10.0, tissue, 20.0, np.zeros((0, 2)), 250.0, caption=["short"], long_side=600)
    long = qc_picture(thumbnail, 10.0, tissue, 20.0, np.zeros((0, 2)), 250.0, caption=[line], long_side=600)
    assert long.width == 600 and long.height > one.height  # several lines, same width


def test_tiles_past_the_slide_edge_are_clipped(scene):
    thumbnail, tissue = scene
    coords = np.array([[2900, 1900], [5000, 5000], [-100, 0]])  # past right/bottom, outside, past left
    picture = np.asarray(qc_picture(thumbnail, 10.0, tissue, 20.0, coords, 250.0, long_side=600))
    box = where_colour(picture, TILE_RGB)
    assert box[380, 580:600].all() and box[380:400, 580].all()  # the near sides of the clipped tile
    assert box[0:50, 29].all()  # the right side of the tile hanging off the left edge


def test_save_writes_a_png_and_leaves_no_temporary_file(scene, tmp_path):
    thumbnail, tissue = scene
    picture = qc_picture(thumbnail, 10.0, tissue, 20.0, np.array([[1000, 500]]), 250.0, caption=["s01"], long_side=600)
    path = save_qc_picture(tmp_path / "qc" / "s01.png", picture)
    assert list(path.parent.iterdir()) == [path]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == 600 and image.height > 400

