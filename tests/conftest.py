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
