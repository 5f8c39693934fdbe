"""Batches of tiles from a source, the next batches read while the current one is embedded."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from wsi_pipeline.sources.protocol import TileSource

#: Batches read ahead of the encoder: enough to hide a slow read, bounded so memory does not
#: grow with the slide.
PREFETCH_BATCHES = 2

_DONE = object()


def iter_tile_batches(
    source: TileSource, coords: np.ndarray, size_level0: float, tile_px: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Yield batches of tiles in ``coords`` order from ``source.read_tiles``.

    A background thread drives the source's batched read into a bounded queue while the caller
    embeds the current batch; OpenSlide decodes outside the GIL, so reading and inference
    overlap. An error in the reader is raised here, in the caller.
    """
    if len(coords) == 0:
        return
    pending: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Put ``item`` in the queue unless the consumer has gone; return whether it went in."""
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in source.read_tiles(coords, size_level0, tile_px, batch_size):
                if not offer(batch):
                    return
            offer(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            offer(error)

    reader = threading.Thread(target=read, name="tile-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = pending.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=5)
