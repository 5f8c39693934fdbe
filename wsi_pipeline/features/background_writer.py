"""Feature rows written to the store by a background thread while the encoder runs on."""

from __future__ import annotations

import queue
import threading
from types import TracebackType
from typing import Self

import numpy as np

from wsi_pipeline.store.feature_store import FeatureWriter

#: Blocks waiting for the writer thread; beyond this the encoder waits (memory stays bounded
#: if the store is slower than the encoder, e.g. a network file system).
PENDING_BLOCKS = 4

_STOP = object()


class BackgroundWriter:
    """Hands feature blocks to a :class:`FeatureWriter` on a thread of its own.

    Zarr compresses and writes a chunk in the writer thread, so the next batch is read and
    embedded meanwhile. An error in the thread is raised by the next :meth:`write` or by
    :meth:`close`; the entry is never marked complete here (the caller does that after
    :meth:`close` returns).

    Parameters
    ----------
    writer
        The entry's writer.
    """

    def __init__(self, writer: FeatureWriter) -> None:
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=PENDING_BLOCKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feature-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is None:
                try:
                    self._writer.write(item)
                except BaseException as error:  # noqa: BLE001 - handed to the producer
                    self._error = error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, rows: np.ndarray) -> None:
        """Queue a block of rows (waits while :data:`PENDING_BLOCKS` are queued)."""
        self._raise_if_failed()
        self._queue.put(rows)

    def close(self) -> None:
        """Wait until every queued block is written; raise the writer thread's error if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
            return
        # Leaving on an error: stop the thread without letting its error hide the first one.
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
