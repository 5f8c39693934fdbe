"""Store-key hashes: parameter sets and files."""

from __future__ import annotations

import hashlib
import os

from wsi_pipeline.store.keys import file_sha256, short_hash


def test_short_hash_ignores_key_order():
    assert short_hash({"a": 1, "b": [2, 3]}) == short_hash({"b": [2, 3], "a": 1}) != short_hash({"a": 2, "b": [2, 3]})


def test_file_hash_is_the_sha256_and_follows_a_replaced_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"first" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"first" * 1000).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)  # str or Path, the same cached entry
    path.write_bytes(b"second" * 1000)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime even on coarse clocks
    assert file_sha256(path) == hashlib.sha256(b"second" * 1000).hexdigest()
