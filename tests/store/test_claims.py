"""One writer per entry: concurrent claims are serialised, the second reuses the first's entry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

from wsi_pipeline.store import FeatureStore
from wsi_pipeline.store.claims import entry_lock, local_root
from wsi_pipeline.store.feature_store import tiling_key


def test_local_roots_get_locks_and_other_urls_do_not(tmp_path):
    assert local_root(str(tmp_path)) == tmp_path and local_root(f"file://{tmp_path}") == tmp_path
    assert local_root("s3://bucket/store") is None and local_root("memory://store") is None
    with entry_lock("memory://store", "tiling/t/u") as locked:
        assert locked is False


def test_concurrent_writers_of_one_entry_take_turns_and_the_second_reuses_it(tmp_path):
    store = FeatureStore(tmp_path / "store")
    store.prepare("tiling/t")
    key = tiling_key("t", "slide_0.5um")
    start = threading.Barrier(2)
    events: list[str] = []
    decisions: dict[str, bool] = {}

    def writer(name: str) -> None:
        start.wait()
        with store.claim(key) as must_write:
            decisions[name] = must_write
            if must_write:
                events.append(f"{name} begins")
                time.sleep(0.3)  # the other writer arrives meanwhile and must wait
                store.write_tiling("t", "slide_0.5um", np.zeros((2, 2)), {"tissue_fraction": np.ones(2)}, {"by": name})
                events.append(f"{name} completes")

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(decisions.values()) == [False, True]  # exactly one computed the entry
    winner = next(name for name, wrote in decisions.items() if wrote)
    assert events == [f"{winner} begins", f"{winner} completes"]
    assert store.is_complete(key) and store.attrs(key)["by"] == winner


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
