"""Tissue contours: polygons in level-0 pixels and GeoJSON that QuPath imports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage import draw

from wsi_pipeline.tiling.contours import (
    contours_geojson,
    mask_polygons,
    polygon_area,
    ring_area,
    write_geojson,
)


def rasterise(polygons: list[list[np.ndarray]], shape: tuple[int, int], scale: float) -> np.ndarray:
    """Paint polygons back onto a mask-scale grid (pixel (r, c) centre = ((c + .5), (r + .5)) × scale)."""
    out = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        for index, ring in enumerate(polygon):
            rows, cols = draw.polygon(ring[:, 1] / scale - 0.5, ring[:, 0] / scale - 0.5, shape)
            out[rows, cols] = index == 0  # outer ring paints, holes erase
    return out


def assert_closed_rings(polygon: list[np.ndarray]) -> None:
    for ring in polygon:
        assert ring.ndim == 2 and ring.shape[1] == 2 and len(ring) >= 4
        np.testing.assert_array_equal(ring[0], ring[-1])


def test_rectangle_gives_one_polygon_with_its_level0_area():
    mask = np.zeros((60, 90), dtype=bool)
    mask[10:40, 20:70] = True  # 30 × 50 mask px
    scale = 8.0
    polygons = mask_polygons(mask, scale)
    assert len(polygons) == 1 and len(polygons[0]) == 1
    outer = polygons[0][0]
    assert_closed_rings(polygons[0])
    assert abs(ring_area(outer)) == pytest.approx(30 * 50 * scale**2, rel=0.03)
    # The ring runs along the pixels' level-0 edges: x from 20 × 8 to 70 × 8, y from 80 to 320.
    assert outer[:, 0].min() == pytest.approx(160) and outer[:, 0].max() == pytest.approx(560)
    assert outer[:, 1].min() == pytest.approx(80) and outer[:, 1].max() == pytest.approx(320)
    assert ring_area(outer) > 0  # RFC 7946 right-hand rule on the numbers: outer positive


def test_ring_gives_a_polygon_with_one_hole_and_the_net_area():
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:45, 5:45] = True
    mask[15:35, 15:35] = False  # 40² - 20² = 1200 mask px
    polygons = mask_polygons(mask, 2.0)
    assert len(polygons) == 1
    outer, *holes = polygons[0]
    assert len(holes) == 1
    assert_closed_rings(polygons[0])
    assert ring_area(outer) > 0 and ring_area(holes[0]) < 0  # holes wind the other way
    assert polygon_area(polygons[0]) == pytest.approx(1200 * 4.0, rel=0.03)


def test_island_inside_a_hole_is_a_polygon_of_its_own():
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:45, 5:45] = True
    mask[15:35, 15:35] = False
    mask[22:28, 22:28] = True  # the island: 36 px
    polygons = mask_polygons(mask, 1.0)
    assert [len(p) for p in polygons] == [2, 1]  # the ring (with its hole) first: larger
    assert polygon_area(polygons[1]) == pytest.approx(36)
    assert polygon_area(polygons[0]) == pytest.approx(1200)


def test_pieces_touching_the_border_give_closed_rings():
    mask = np.zeros((20, 30), dtype=bool)
    mask[:10, :] = True  # touches the top, left and right edges
    mask[15:, 25:] = True  # the bottom-right corner
    polygons = mask_polygons(mask, 4.0)
    assert len(polygons) == 2
    for polygon in polygons:
        assert_closed_rings(polygon)
    assert polygon_area(polygons[0]) == pytest.approx(10 * 30 * 16)
    assert polygons[0][0][:, 1].min() == 0.0  # along the top edge of the slide
    assert polygon_area(polygons[1]) == pytest.approx(5 * 5 * 16)


def test_small_pieces_and_holes_are_dropped():
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:25, 5:25] = True
    mask[10, 10] = False  # a 1-pixel hole: filled
    mask[1, 1] = True  # a 1-pixel speck: dropped
    polygons = mask_polygons(mask, 1.0, min_area_px=4)
    assert len(polygons) == 1 and len(polygons[0]) == 1
    assert polygon_area(polygons[0]) == pytest.approx(400)


def test_polygons_rasterise_back_to_a_random_blob_mask():
    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.random((200, 300)), 6) > 0.5  # many pieces, some holed
    scale = 2.0
    polygons = mask_polygons(mask, scale, min_area_px=1)
    assert len(polygons) > 5
    back = rasterise(polygons, mask.shape, scale)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou >= 0.95
    exact = rasterise(mask_polygons(mask, scale, simplify_px=0, min_area_px=1), mask.shape, scale)
    np.testing.assert_array_equal(exact, mask)  # without simplification the outline is the pixels'


def test_geojson_features_classification_and_area():
    tissue = np.zeros((40, 40), dtype=bool)
    tissue[2:12, 2:12] = True
    tissue[20:38, 20:38] = True
    pen = np.zeros((40, 40), dtype=bool)
    pen[30:34, 2:10] = True
    data = contours_geojson(tissue, 4.0, pen=pen, properties={"slide_id": "s01"}, mpp=0.5)
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    assert [f["properties"]["classification"]["name"] for f in features] == ["Tissue", "Tissue", "Pen"]
    assert [f["properties"]["name"] for f in features] == ["Tissue 1", "Tissue 2", "Pen 1"]
    first = features[0]
    assert first["type"] == "Feature" and first["geometry"]["type"] == "Polygon"
    assert first["properties"]["objectType"] == "annotation"
    assert len(first["properties"]["classification"]["color"]) == 3  # QuPath needs name and color
    assert first["properties"]["slide_id"] == "s01"
    # 18² mask px × 4² level-0 px × 0.5² µm² = 1296 µm² (largest piece first)
    assert first["properties"]["measurements"]["area_um2"] == pytest.approx(18 * 18 * 16 * 0.25)


def test_geojson_file_round_trip(tmp_path):
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:45, 5:45] = True
    mask[15:35, 15:35] = False
    mask[0:3, 47:50] = True
    path = write_geojson(tmp_path / "geo" / "s01.geojson", contours_geojson(mask, 2.0))
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded["type"] == "FeatureCollection"
    assert len(loaded["features"]) == 2
    assert all(f["geometry"]["type"] == "Polygon" for f in loaded["features"])
    assert len(loaded["features"][0]["geometry"]["coordinates"]) == 2  # shell + one hole
    for feature in loaded["features"]:
        for ring in feature["geometry"]["coordinates"]:
            assert len(ring) >= 4 and ring[0] == ring[-1]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left beside it


def test_empty_mask_gives_an_empty_collection():
    assert mask_polygons(np.zeros((10, 10), dtype=bool), 4.0) == []
    data = contours_geojson(np.zeros((10, 10), dtype=bool), 4.0, pen=np.zeros((10, 10), dtype=bool))
    assert data == {"type": "FeatureCollection", "features": []}
