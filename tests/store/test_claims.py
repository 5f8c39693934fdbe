"""One writer per entry: concurrent claims are serialised, the second reuses the first's entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import fsspec
import numpy as np
import pytest

from wsi_pipeline.store import FeatureStore, claims
from wsi_pipeline.store.claims import entry_lock, local_root
from wsi_pipeline.store.feature_store import tiling_key


def test_local_roots_get_flock_and_other_urls_a_lease(tmp_path):
    assert local_root(str(tmp_path)) == tmp_path and local_root(f"file://{tmp_path}") == tmp_path
    assert local_root("s3://bucket/store") is None and local_root("memory://store") is None
    with entry_lock("memory://lease-store", "tiling/t/u") as locked:
        assert locked is True
        claims = fsspec.filesystem("memory").ls("/lease-store/.locks", detail=False)
        assert len(claims) == 1 and json.loads(fsspec.filesystem("memory").cat(claims[0]))["pid"] == os.getpid()
    assert fsspec.filesystem("memory").ls("/lease-store/.locks", detail=False) == []  # released


@pytest.mark.parametrize("root", ["local", "memory://claims-store"])
def test_writers_on_any_store_take_turns(tmp_path, root):
    store = FeatureStore(str(tmp_path / "store") if root == "local" else root)
    store.prepare("tiling/t")
    key = tiling_key("t", "u")
    start = threading.Barrier(2)
    decisions, events = {}, []

    def writer(name):
        start.wait()
        with store.claim(key) as must_write:
            decisions[name] = must_write
            if must_write:
                events.append(f"{name} begins")
                time.sleep(0.3)
                store.write_tiling("t", "u", np.zeros((1, 2)), {"tissue_fraction": np.ones(1)}, {"by": name})
                events.append(f"{name} completes")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(decisions.values()) == [False, True]  # exactly one computed the entry
    winner = next(name for name, wrote in decisions.items() if wrote)
    assert events == [f"{winner} begins", f"{winner} completes"]
    assert store.read_tiling("t", "u").attrs["by"] == winner


def test_a_dead_writers_lease_is_taken_over_and_a_live_one_is_not(monkeypatch):
    fs = fsspec.filesystem("memory")
    root, key = "memory://lease-takeover", "features/e/t/u"
    path = f"/lease-takeover/.locks/{claims._lock_name(key)}.claim"
    fs.makedirs("/lease-takeover/.locks", exist_ok=True)
    fs.pipe(path, json.dumps({"owner": "dead", "renewed": time.time() - 1000}).encode())
    with claims.lease(root, key, lease_seconds=5, poll_seconds=0.01):
        assert json.loads(fs.cat(path))["owner"] != "dead"
    # A live holder renews every lease/4: a waiter never takes it over, however long it holds.
    order = []

    def holder():
        with claims.lease(root, key, lease_seconds=0.4, poll_seconds=0.01):
            order.append("holder in")
            time.sleep(1.2)  # three leases long
            order.append("holder out")

    thread = threading.Thread(target=holder)
    thread.start()
    while not order:
        time.sleep(0.01)
    with claims.lease(root, key, lease_seconds=0.4, poll_seconds=0.01):
        order.append("waiter in")
    thread.join()
    assert order == ["holder in", "holder out", "waiter in"]


def test_a_writer_whose_lease_was_taken_over_does_not_mark_complete():
    store = FeatureStore("memory://lease-lost")
    key = "features/e/t/u"
    fs = fsspec.filesystem("memory")
    with pytest.raises(claims.ClaimLost), store.claim(key) as must_write:
        assert must_write
        writer = store.begin_features("e", "t", "u", n_rows=2, dim=2, attrs={})
        writer.write(np.zeros((2, 2)))
        # Another writer takes the lease over (as if ours had gone stale).
        path = f"/lease-lost/.locks/{claims._lock_name(key)}.claim"
        fs.pipe(path, json.dumps({"owner": "someone else", "renewed": time.time()}).encode())
        claims._HELD[(store.root, key)].set()  # what the renewer notices at its next renewal
        writer.complete()
    assert not store.is_complete(key)


def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    root = tmp_path / "store"
    flag = tmp_path / "flag"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from wsi_pipeline.store.claims import entry_lock
        with entry_lock({str(root)!r}, "features/e/t/u"):
            Path({str(flag)!r}).write_text("held")
            time.sleep(1.0)
            Path({str(flag)!r}).write_text("released")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        while not flag.exists():
            time.sleep(0.02)
        with entry_lock(str(root), "features/e/t/u"):
            assert flag.read_text() == "released"  # we got the lock only once the child let go
    finally:
        child.wait(timeout=30)
    # A holder killed with SIGKILL leaves no stale lock behind.
    flag.unlink()
    killed = subprocess.Popen([sys.executable, "-c", script.replace("time.sleep(1.0)", "time.sleep(60)")])
    while not flag.exists():
        time.sleep(0.02)
    killed.kill()
    killed.wait(timeout=30)
    with entry_lock(str(root), "features/e/t/u") as locked:
        assert locked is True and flag.read_text() == "held"
