"""One writer per store entry: an exclusive lock held while an entry is computed and written.

Two tasks can want the same entry at once: one slide under two ids in a cohort (its content uid,
hence its entry, is the same), or two runs sharing a store. Without a lock both write the same
Zarr group, and one's ``overwrite`` deletes the folder the other is filling (``OSError: Directory
not empty``), or one marks complete what the other has just recreated half-empty.

The lock is a POSIX advisory lock (``flock``) on a file per entry under ``<store>/.locks/``:

- it is released by the kernel when its holder dies (a killed worker, a killed run), so a crash
  never leaves a stale claim that blocks the next run;
- on a shared POSIX file system it holds across machines where the file system implements
  ``flock`` (NFSv4; Lustre and GPFS mounted with their flock option);
- the writer re-checks completeness after acquiring it, so a waiter whose entry was completed
  meanwhile reuses it instead of computing it again.

Stores on other fsspec URLs (object stores) have no such lock; there an entry's writers are not
serialised yet (see the README).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Folder of the lock files, inside the store root.
LOCK_FOLDER = ".locks"


def local_root(root: str) -> Path | None:
    """The local folder of a store given as a path or ``file://`` URL; None for other URLs."""
    if root.startswith("file://"):
        return Path(root.removeprefix("file://"))
    if "://" in root:
        return None
    return Path(root)


@contextmanager
def entry_lock(root: str, key: str) -> Iterator[bool]:
    """Hold the exclusive write lock of entry ``key`` of the store at ``root``.

    Parameters
    ----------
    root
        The store location (a local path or ``file://`` URL gets a lock).
    key
        The entry's group path (``tiling/<id>/<slide>``...).

    Yields
    ------
    bool
        True when a lock is held; False for stores where no lock is available.
    """
    folder = local_root(root)
    if folder is None:
        yield False
        return
    locks = folder / LOCK_FOLDER
    locks.mkdir(parents=True, exist_ok=True)
    # Hashed: entry keys hold slashes, and lock names must be flat.
    path = locks / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another writer computes this entry
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
