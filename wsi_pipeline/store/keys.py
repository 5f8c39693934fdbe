"""Stable short hashes of parameter sets, used in store keys."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any


def short_hash(params: dict[str, Any], length: int = 10) -> str:
    """Return a short, order-independent hash of JSON-serialisable parameters.

    Parameters
    ----------
    params
        The parameters (keys sorted before hashing, so dict order does not matter).
    length
        Hex characters kept.

    Returns
    -------
    str
        The hash prefix.
    """
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file, computed once per process while the file is unchanged.

    Encoder checkpoints and segmentation models are large and several stages ask for their hash
    (store keys, provenance, the dry run), so it is cached on the file's path, size and
    modification time: a replaced file is hashed again.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    file = Path(path)
    stat = file.stat()
    return _file_sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
