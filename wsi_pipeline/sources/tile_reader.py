"""Tiles read in batches from strips several tiles wide, by a pool of reader threads.

Reading a tile at a time costs one region request per tile: OpenSlide locates, reads and decodes
every stored tile the request touches, and a 20x tile from a 40x Aperio level touches four. A
strip of adjacent tiles in one grid row is one request instead, decoding each stored tile once;
several strips are read at once by threads (OpenSlide and libjpeg-turbo release the GIL), and at
most a few strips are in flight, so memory follows the number of threads, not the slide.

The functions here know nothing of file formats: a *region reader* (OpenSlide, or raw JPEG tiles
decoded in batches) supplies the pixels of a rectangle of one pyramid level.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

#: A strip is at most this many level pixels wide: one request stays a few MB of RGB.
MAX_STRIP_PX = 4096

#: DCT-domain reductions a JPEG decoder can apply (libjpeg-turbo scales by 1/2, 1/4, 1/8).
JPEG_REDUCTIONS = (8, 4, 2)

#: ``read(level, left, top, width, height, reduce) -> (height // reduce, width // reduce, 3) uint8``,
#: coordinates in pixels of ``level``.
RegionReader = Callable[[int, int, int, int, int, int], np.ndarray]

#: ``resize(rgb, width, height) -> rgb`` (area filter when shrinking).
Resizer = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class Strip:
    """Adjacent tiles of one grid row, read as one region of one level.

    Attributes
    ----------
    first, count
        The tiles ``coords[first:first + count]``.
    left, top, width, height
        The region, in pixels of the read level.
    offsets
        (count,) left edge of each tile inside the region, in level pixels.
    """

    first: int
    count: int
    left: int
    top: int
    width: int
    height: int
    offsets: tuple[int, ...]


def plan_strips(
    coords: np.ndarray, size_level0: float, level_downsample: float, max_width: int = MAX_STRIP_PX
) -> list[Strip]:
    """Group consecutive tiles that touch in one grid row into strips.

    Parameters
    ----------
    coords
        (N, 2) level-0 top-left (x, y), in the order tiles are wanted (row-major for a tiling).
    size_level0
        Tile side in level-0 pixels.
    level_downsample
        Downsample of the level read.
    max_width
        Widest strip in level pixels; a tile wider than this is a strip of its own.

    Returns
    -------
    list of Strip
        Covering ``coords`` in order: tile ``i`` is in the strip whose range holds ``i``. Tiles
        join a strip only if they follow the previous one in ``coords``, share its row and
        start no further right than its right edge (adjacent or overlapping), so no glass
        between tiles is read.
    """
    coords = np.asarray(coords).reshape(-1, 2)
    side = max(1, round(size_level0 / level_downsample))
    lefts = np.rint(coords[:, 0] / level_downsample).astype(np.int64)
    tops = np.rint(coords[:, 1] / level_downsample).astype(np.int64)
    strips: list[Strip] = []
    start = 0
    for i in range(1, len(coords) + 1):
        ends_here = (
            i == len(coords)
            or tops[i] != tops[start]
            or not lefts[i - 1] < lefts[i] <= lefts[i - 1] + side
            or lefts[i] + side - lefts[start] > max_width
        )
        if ends_here:
            left = int(lefts[start])
            strips.append(
                Strip(
                    first=start,
                    count=i - start,
                    left=left,
                    top=int(tops[start]),
                    width=int(lefts[i - 1]) + side - left,
                    height=side,
                    offsets=tuple(int(v) - left for v in lefts[start:i]),
                )
            )
            start = i
    return strips


def jpeg_reduction(strip: Strip, side: int, tile_px: int) -> int:
    """Return the largest JPEG DCT reduction that leaves every tile of ``strip`` at least ``tile_px`` wide.

    Parameters
    ----------
    strip
        The region to decode.
    side
        Tile side in level pixels.
    tile_px
        Tile side wanted.

    Returns
    -------
    int
        8, 4, 2, or 1 when no reduction divides the strip's corner, size and tile offsets
        exactly (a reduced decode must cut tiles on whole reduced pixels).
    """
    for reduce in JPEG_REDUCTIONS:
        if side < reduce * tile_px:
            continue
        values = (strip.left, strip.top, strip.width, strip.height, side, *strip.offsets)
        if all(v % reduce == 0 for v in values):
            return reduce
    return 1


def cut_strip(
    region: np.ndarray, strip: Strip, side: int, reduce: int, tile_px: int, resize: Resizer,
    allocate: Callable[[int], np.ndarray] | None = None,
) -> np.ndarray:
    """Cut a strip's region into its tiles, each resized to ``tile_px``.

    Parameters
    ----------
    region
        (strip.height // reduce, strip.width // reduce, 3) uint8.
    strip
        Where the tiles lie in the region.
    side
        Tile side in level pixels.
    reduce
        How much the region was shrunk when decoded.
    tile_px
        Tile side out.
    resize
        The resampling function.
    allocate
        ``allocate(n)`` returns an empty (n, tile_px, tile_px, 3) uint8 array (a tensor on the
        device when the region is one); default ``numpy.empty``.

    Returns
    -------
    numpy.ndarray
        (strip.count, tile_px, tile_px, 3) uint8, of the kind ``allocate`` makes.
    """
    cut = side // reduce
    tiles = allocate(strip.count) if allocate else np.empty((strip.count, tile_px, tile_px, 3), dtype=np.uint8)
    for i, offset in enumerate(strip.offsets):
        start = offset // reduce
        tiles[i] = resize(region[:cut, start : start + cut], tile_px, tile_px)
    return tiles


def read_tiles_in_strips(
    read_region: RegionReader,
    coords: np.ndarray,
    size_level0: float,
    level: int,
    level_downsample: float,
    tile_px: int,
    batch_size: int,
    *,
    resize: Resizer,
    workers: int = 2,
    scaled_decode: bool = False,
    allocate: Callable[[int], np.ndarray] | None = None,
    allocate_strip: Callable[[int], np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the tiles at ``coords`` in order, as (B, tile_px, tile_px, 3) uint8 batches.

    Strips are read by ``workers`` threads, at most ``2 * workers`` in flight, and their tiles
    copied into batches in the order of ``coords``.

    Parameters
    ----------
    read_region
        Pixels of a rectangle of a level (see :data:`RegionReader`).
    coords
        (N, 2) level-0 top-left (x, y).
    size_level0
        Tile side in level-0 pixels.
    level, level_downsample
        The level read and its downsample.
    tile_px
        Tile side out.
    batch_size
        Tiles per batch (the last may be smaller).
    resize
        Resampling from level pixels to ``tile_px``.
    workers
        Reader threads (1 reads in the calling thread's pool of one).
    scaled_decode
        Ask ``read_region`` for a DCT-domain reduction when tiles shrink by 2x or more.
    allocate
        ``allocate(n)`` returns an empty (n, tile_px, tile_px, 3) uint8 batch (pinned memory
        for a GPU, or a tensor on it when tiles are decoded there); default ``numpy.empty``.
    allocate_strip
        The same for a strip's tiles (default ``numpy.empty``; a tensor on the device when
        ``read_region`` decodes there).
    """
    coords = np.asarray(coords).reshape(-1, 2)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(coords) == 0:
        return
    side = max(1, round(size_level0 / level_downsample))
    strips = plan_strips(coords, size_level0, level_downsample)
    allocate = allocate or (lambda n: np.empty((n, tile_px, tile_px, 3), dtype=np.uint8))

    def read(strip: Strip) -> np.ndarray:
        reduce = jpeg_reduction(strip, side, tile_px) if scaled_decode else 1
        region = read_region(level, strip.left, strip.top, strip.width, strip.height, reduce)
        return cut_strip(region, strip, side, reduce, tile_px, resize, allocate_strip)

    workers = max(1, int(workers))
    in_flight: deque[Future[np.ndarray]] = deque()
    pending = iter(strips)
    total = len(coords)
    batch = allocate(min(batch_size, total))
    filled = emitted = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="strip-reader") as pool:
        try:
            for strip in _take(pending, 2 * workers):
                in_flight.append(pool.submit(read, strip))
            while in_flight:
                tiles = in_flight.popleft().result()
                for strip in _take(pending, 1):
                    in_flight.append(pool.submit(read, strip))
                used = 0
                while used < len(tiles):
                    n = min(len(tiles) - used, len(batch) - filled)
                    batch[filled : filled + n] = tiles[used : used + n]
                    filled += n
                    used += n
                    if filled == len(batch):
                        yield batch
                        emitted += filled
                        filled = 0
                        if emitted < total:
                            batch = allocate(min(batch_size, total - emitted))
        finally:
            # A consumer that stops early (or an error) must not wait for strips nobody will use.
            for future in in_flight:
                future.cancel()


def _take(iterator: Iterator[Strip], n: int) -> list[Strip]:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out



def resize_rgb_tensor(rgb, width: int, height: int):
    """Resize an (H, W, 3) uint8 tensor on its device: area filter when shrinking, bicubic when enlarging.

    The tensor counterpart of :func:`wsi_pipeline.sources.wsi.resize_rgb`, for tiles decoded on a
    GPU; an area filter is PIL's box filter, so the two agree to rounding.

    Parameters
    ----------
    rgb
        ``torch.Tensor`` uint8 (H, W, 3).
    width, height
        Output size.

    Returns
    -------
    torch.Tensor
        uint8 (height, width, 3) on the same device; the input itself when the size matches.
    """
    import torch
    import torch.nn.functional as F

    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    image = rgb.permute(2, 0, 1).unsqueeze(0).float()
    if rgb.shape[1] >= width and rgb.shape[0] >= height:
        image = F.interpolate(image, size=(height, width), mode="area")
    else:
        image = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False)
    return image.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
