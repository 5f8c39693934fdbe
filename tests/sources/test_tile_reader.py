"""Strip planning and the threaded batched tile reader, on an in-memory "level"."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from wsi_pipeline.sources.tile_reader import (
    Strip,
    cut_strip,
    jpeg_reduction,
    plan_strips,
    read_tiles_in_strips,
)
from wsi_pipeline.sources.wsi import resize_rgb


def grid(xs, ys, step):
    return np.array([(x * step, y * step) for y in ys for x in xs], dtype=np.int64)


def test_plan_strips_joins_adjacent_tiles_of_a_row_and_splits_at_gaps_rows_and_width():
    coords = np.array([(0, 0), (512, 0), (1024, 0), (2048, 0), (0, 512), (512, 512)], dtype=np.int64)
    strips = plan_strips(coords, size_level0=512, level_downsample=1.0, max_width=4096)
    assert [(s.first, s.count) for s in strips] == [(0, 3), (3, 1), (4, 2)]
    assert strips[0] == Strip(first=0, count=3, left=0, top=0, width=1536, height=512, offsets=(0, 512, 1024))
    assert strips[1].left == 2048 and strips[1].width == 512
    assert strips[2].top == 512
    # At level 1 (downsample 2) the same tiles are 256 px and the strip is half as wide.
    half = plan_strips(coords, 512, 2.0)
    assert half[0].width == 768 and half[0].offsets == (0, 256, 512)
    # A width cap of 1024 level px holds two 512-px tiles.
    capped = plan_strips(coords[:3], 512, 1.0, max_width=1024)
    assert [(s.first, s.count) for s in capped] == [(0, 2), (2, 1)]


def test_plan_strips_keeps_overlapping_tiles_together_and_out_of_order_tiles_apart():
    overlapping = np.array([(0, 0), (448, 0), (896, 0)], dtype=np.int64)  # 64-px overlap
    (strip,) = plan_strips(overlapping, 512, 1.0)
    assert strip.count == 3 and strip.width == 896 + 512 and strip.offsets == (0, 448, 896)
    backwards = np.array([(512, 0), (0, 0)], dtype=np.int64)
    assert [s.count for s in plan_strips(backwards, 512, 1.0)] == [1, 1]


def test_jpeg_reduction_picks_the_largest_exact_scale_that_keeps_tile_px():
    strip = Strip(0, 2, left=1024, top=512, width=1024, height=512, offsets=(0, 512))
    assert jpeg_reduction(strip, side=512, tile_px=256) == 2
    assert jpeg_reduction(strip, side=512, tile_px=128) == 4
    assert jpeg_reduction(strip, side=512, tile_px=512) == 1
    odd = Strip(0, 1, left=1023, top=512, width=512, height=512, offsets=(0,))
    assert jpeg_reduction(odd, side=512, tile_px=256) == 1


@pytest.fixture(scope="module")
def level_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(1024, 3072, 3), dtype=np.uint8)


def make_reader(image: np.ndarray, calls: list | None = None, delay: float = 0.0):
    def read(level, left, top, width, height, reduce):
        if calls is not None:
            calls.append((left, top, width, height, reduce))
        if delay:
            time.sleep(delay)
        region = np.full((height, width, 3), 255, dtype=np.uint8)
        h = max(0, min(height, image.shape[0] - top))
        w = max(0, min(width, image.shape[1] - left))
        region[:h, :w] = image[top : top + h, left : left + w]
        if reduce > 1:
            region = resize_rgb(region, width // reduce, height // reduce)
        return region

    return read


def expected_tiles(image: np.ndarray, coords: np.ndarray, side: int, tile_px: int) -> np.ndarray:
    out = []
    for x, y in coords:
        tile = np.full((side, side, 3), 255, dtype=np.uint8)
        crop = image[y : y + side, x : x + side]
        tile[: crop.shape[0], : crop.shape[1]] = crop
        out.append(resize_rgb(tile, tile_px, tile_px))
    return np.stack(out)


@pytest.mark.parametrize("workers", [1, 3])
def test_batched_reads_equal_tile_by_tile_reads_in_order(level_image, workers):
    coords = grid(range(6), range(2), 512)
    coords = np.concatenate([coords[::2], coords[1::2]])  # not all adjacent: many strips
    calls: list = []
    batches = list(
        read_tiles_in_strips(make_reader(level_image, calls), coords, 512, 0, 1.0, 256, 5, resize=resize_rgb, workers=workers)
    )
    assert [len(b) for b in batches] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate(batches), expected_tiles(level_image, coords, 512, 256))
    assert len(calls) == len(plan_strips(coords, 512, 1.0))


def test_tiles_past_the_edge_are_white_and_scaled_decode_is_used_when_exact(level_image):
    coords = np.array([(2816, 768), (0, 0), (512, 0)], dtype=np.int64)  # the first runs off both edges
    calls: list = []
    tiles = np.concatenate(
        list(read_tiles_in_strips(make_reader(level_image, calls), coords, 512, 0, 1.0, 256, 8, resize=resize_rgb, scaled_decode=True))
    )
    assert (tiles[0, 200:, :] == 255).all() and (tiles[0, :, 200:] == 255).all()
    assert {c[4] for c in calls} == {2}
    # A box-downsampled region then cut equals tiles cut then box-downsampled (the fake reader's
    # reduction is exact), so the two paths agree here to the pixel.
    np.testing.assert_array_equal(tiles, expected_tiles(level_image, coords, 512, 256))


def test_reads_in_flight_are_bounded_and_an_early_stop_does_not_hang(level_image):
    coords = np.array([(x, y) for y in range(0, 1024, 64) for x in range(0, 3072, 128)], dtype=np.int64)[::2]
    calls: list = []
    reader = read_tiles_in_strips(make_reader(level_image, calls, delay=0.002), coords, 64, 0, 1.0, 32, 1, resize=resize_rgb, workers=2)
    for consumed in range(1, 11):
        next(reader)
        time.sleep(0.01)  # a slow consumer: readers must wait, not run ahead
        assert len(calls) <= consumed + 2 * 2 + 1
    started = time.perf_counter()
    reader.close()
    assert time.perf_counter() - started < 2
    assert len(calls) < len(coords)


def test_a_reader_error_reaches_the_consumer(level_image):
    def failing(level, left, top, width, height, reduce):
        if left >= 1024:
            raise OSError("corrupt tile")
        return make_reader(level_image)(level, left, top, width, height, reduce)

    coords = np.array([(0, 0), (2048, 0)], dtype=np.int64)
    with pytest.raises(OSError, match="corrupt tile"):
        list(read_tiles_in_strips(failing, coords, 512, 0, 1.0, 256, 1, resize=resize_rgb, workers=2))


def test_reader_threads_run_concurrently(level_image):
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(level, left, top, width, height, reduce):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return make_reader(level_image)(level, left, top, width, height, reduce)

    coords = np.array([(x, 0) for x in range(0, 3072, 1024)] * 4, dtype=np.int64)
    list(read_tiles_in_strips(slow, coords, 512, 0, 1.0, 128, 4, resize=resize_rgb, workers=4))
    assert peak[0] >= 2


def test_cut_strip_at_reduced_scale():
    region = np.arange(256 * 512 * 3, dtype=np.uint32).reshape(256, 512, 3).astype(np.uint8)
    strip = Strip(0, 2, 0, 0, 1024, 512, (0, 512))
    tiles = cut_strip(region, strip, side=512, reduce=2, tile_px=256, resize=resize_rgb)
    np.testing.assert_array_equal(tiles[1], region[:, 256:512])
