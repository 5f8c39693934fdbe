"""Fixtures shared across the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real test files (Aperio slide, unreadable slides...) live beside the repository in ../shared.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """The folder of real slides, or skip with the reason when ../shared is absent."""
    folder = SHARED_DATA / "slides"
    if not folder.is_dir():
        pytest.skip(f"real test slides not available: {folder} is absent (../shared is not checked out beside the repo)")
    return folder


def pytest_configure(config: pytest.Config) -> None:
    """Start local Dask workers from a fork server that has imported the pipeline already.

    Every engine test starts a local cluster of worker processes, and a spawned worker spends
    about 5 s importing torch, timm and the pipeline before its first task; over the suite that
    was minutes of CI. A fork server imports them once, and each worker forks from it already
    loaded. What the tests exercise is unchanged: workers are still separate processes that share
    nothing with the test process but what is pickled to them (the fork server is a fresh
    interpreter, not a fork of pytest). Dask sets its own preload list the first time it asks
    for the fork server context; marking it set keeps ours, which includes Dask's.

    One difference from spawned workers: a worker inherits the environment the fork server
    started with, not the test process's at the time, so a variable a worker needs goes in its
    spec's ``env`` (as the pipeline's own ``CUDA_VISIBLE_DEVICES`` does), not ``monkeypatch.setenv``.
    """
    import multiprocessing

    import dask
    import distributed.utils

    preload = ["distributed", "numpy", "pandas", "wsi_pipeline.engine.tasks", "wsi_pipeline.features.extract",
               "wsi_pipeline.tiling.qc_files"]
    multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
    distributed.utils._forkserver_preload_set = True
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
