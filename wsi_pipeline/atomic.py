"""Atomic file writes, for every module: a temporary file next to the target, then ``os.replace``.

A reader (or a resumed run) therefore sees either the previous complete file or the new
complete file, never a truncated one: a killed run leaves no half-written output behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``path`` if the block succeeds.

    Parameters
    ----------
    path
        The final destination. Its parent directory is created if needed.

    Yields
    ------
    Path
        A unique temporary file in the same directory (same filesystem, so the final
        ``os.replace`` is atomic). It is removed if the block raises.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, unique name: concurrent writers (e.g. two Dask workers) never share a temp file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path.

    Parameters
    ----------
    path
        Destination file.
    text
        Full file content.

    Returns
    -------
    Path
        ``path`` as a ``Path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fsync(path: Path) -> None:
    # Flush the data to disk before the rename: otherwise a crash right after os.replace
    # can leave a complete-looking name pointing at an empty file on some filesystems.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
