"""Content checksums of stored arrays, computed as rows are written and checked by ``store verify``.

A checksum is the SHA-256 of an array's values in row order, as little-endian bytes of the stored
dtype (float16 features, int64 coordinates). It depends on the values only, not on how they were
chunked, compressed or split into writes, so a writer can feed it block by block as it flushes
and a checker can recompute it chunk by chunk, and an exported-then-imported entry hashes the same.
"""

from __future__ import annotations

import hashlib

import numpy as np


class RowsDigest:
    """An incremental SHA-256 over rows of one dtype, fed in row order.

    Parameters
    ----------
    dtype
        The stored dtype; every block is hashed as its little-endian form, so a checksum does
        not depend on the machine that computed it.
    """

    def __init__(self, dtype: str | np.dtype) -> None:
        self._dtype = np.dtype(dtype).newbyteorder("<")
        self._digest = hashlib.sha256()
        self.rows = 0

    def update(self, block: np.ndarray) -> None:
        """Hash the next rows (cast to the digest's dtype)."""
        block = np.ascontiguousarray(block, dtype=self._dtype)
        self._digest.update(block.tobytes())
        self.rows += len(block)

    def hexdigest(self) -> str:
        """The SHA-256 of every row fed so far, as 64 hex characters."""
        return self._digest.hexdigest()


def rows_sha256(values: np.ndarray, dtype: str | np.dtype) -> str:
    """Return the checksum of a whole array as stored with ``dtype`` (see :class:`RowsDigest`)."""
    digest = RowsDigest(dtype)
    digest.update(values)
    return digest.hexdigest()
