"""Batches of tiles read from a slide, the next batch read while the current one is embedded."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wsi_pipeline.sources.wsi import WholeSlide


def read_tile_batch(slide: WholeSlide, coords: np.ndarray, size_level0: float, tile_px: int) -> np.ndarray:
    """Read tiles at ``coords`` (level-0 x, y) as an (B, tile_px, tile_px, 3) uint8 array."""
    batch = np.empty((len(coords), tile_px, tile_px, 3), dtype=np.uint8)
    for i, (x, y) in enumerate(coords):
        batch[i] = slide.read_tile(int(x), int(y), size_level0, tile_px)
    return batch


def iter_tile_batches(
    slide: WholeSlide, coords: np.ndarray, size_level0: float, tile_px: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Yield batches of tiles in ``coords`` order.

    One background thread reads the next batch while the caller embeds the current one;
    OpenSlide decodes outside the GIL, so reading and inference overlap.
    """
    starts = range(0, len(coords), batch_size)
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-reader") as pool:
        pending = pool.submit(read_tile_batch, slide, coords[0:batch_size], size_level0, tile_px)
        for start in starts:
            batch = pending.result()
            following = start + batch_size
            if following < len(coords):
                pending = pool.submit(
                    read_tile_batch, slide, coords[following : following + batch_size], size_level0, tile_px
                )
            yield batch
