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

Stores on other fsspec URLs (``s3://``, ``gs://``, ``memory://``...) have no ``flock``; there the
lock is a **lease**: a claim object created with an exclusive create (``mode="xb"``: a conditional
``PUT`` with ``If-None-Match: *`` on S3, which object stores make atomic), renewed by its holder
every quarter of :data:`LEASE_SECONDS` and deleted when it is done. A claim not renewed for a whole
lease belongs to a dead writer and is taken over. That is safe as long as a live writer never goes
a whole lease without renewing (a frozen node could; the lease is long for that reason), and a
writer that finds its claim taken over stops before marking anything complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Folder of the lock files, inside the store root.
LOCK_FOLDER = ".locks"

#: A lease not renewed for this long is a dead writer's. Renewals come every quarter of it.
LEASE_SECONDS = 120.0
#: How often a waiting writer looks at the claim again.
POLL_SECONDS = 1.0


class ClaimLost(RuntimeError):
    """This writer's lease was taken over (it went a whole lease without renewing): stop writing."""


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
        The store location: a local path or ``file://`` URL gets a ``flock``, any other fsspec
        URL a lease (:func:`lease`).
    key
        The entry's group path (``tiling/<id>/<slide>``...).

    Yields
    ------
    bool
        True once the lock is held.
    """
    folder = local_root(root)
    if folder is None:
        with lease(root, key):
            yield True
        return
    locks = folder / LOCK_FOLDER
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / (_lock_name(key) + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another writer computes this entry
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_name(key: str) -> str:
    # Hashed: entry keys hold slashes, and lock names must be flat.
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@contextmanager
def lease(root: str, key: str, lease_seconds: float = LEASE_SECONDS, poll_seconds: float = POLL_SECONDS) -> Iterator[None]:
    """Hold the lease of entry ``key`` of an fsspec store (object stores, ``memory://``).

    Parameters
    ----------
    root
        The store URL.
    key
        The entry's group path.
    lease_seconds
        A claim not renewed for this long is taken over.
    poll_seconds
        Wait between looks at a claim held by another writer.

    Raises
    ------
    ClaimLost
        On leaving the block, when another writer took the lease over meanwhile. Writers also
        ask :func:`still_held` right before marking an entry complete, and refuse if not.
    """
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
    path = f"{base.rstrip('/')}/{LOCK_FOLDER}/{_lock_name(key)}.claim"
    token = uuid.uuid4().hex
    _acquire(fs, path, token, lease_seconds, poll_seconds)
    stop = threading.Event()
    lost = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 4):
            if _read_claim(fs, path).get("owner") != token:
                lost.set()
                return
            _write_claim(fs, path, token, "wb")

    renewer = threading.Thread(target=renew, name="store-lease", daemon=True)
    renewer.start()
    _HELD[(root, key)] = lost
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        _HELD.pop((root, key), None)
        if _read_claim(fs, path).get("owner") == token:
            fs.rm(path)
    if lost.is_set():
        raise ClaimLost(f"the lease of store entry '{key}' was taken over by another writer")


#: Leases held by this process, by (root, key): set when one is lost.
_HELD: dict[tuple[str, str], threading.Event] = {}


def still_held(root: str, key: str) -> bool:
    """Whether this process still holds the lock of ``key`` (always true for ``flock`` locks)."""
    lost = _HELD.get((root, key))
    return lost is None or not lost.is_set()


def _acquire(fs, path: str, token: str, lease_seconds: float, poll_seconds: float) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    while True:
        try:
            _write_claim(fs, path, token, "xb")
            return
        except FileExistsError:
            pass
        claim = _read_claim(fs, path)
        if claim and time.time() - claim.get("renewed", 0.0) > lease_seconds:
            # A dead writer's claim. Re-read right before removing it, so a claim another waiter
            # has just taken over (a new owner) is not removed in its place.
            if _read_claim(fs, path).get("owner") == claim.get("owner"):
                try:
                    fs.rm(path)
                except FileNotFoundError:
                    pass
            continue
        time.sleep(poll_seconds)


def _write_claim(fs, path: str, token: str, mode: str) -> None:
    body = {"owner": token, "host": socket.gethostname(), "pid": os.getpid(), "renewed": time.time()}
    with fs.open(path, mode) as handle:
        handle.write(json.dumps(body).encode())


def _read_claim(fs, path: str) -> dict:
    try:
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read() or b"{}")
    except (FileNotFoundError, ValueError):
        return {}
