"""Feature blocks written by a background thread: same rows, errors reach the producer."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.features.background_writer import BackgroundWriter
from wsi_pipeline.store import FeatureStore


def test_rows_written_in_the_background_equal_the_input(tmp_path):
    store = FeatureStore(tmp_path / "store")
    writer = store.begin_features("e", "t", "u", n_rows=3000, dim=8, attrs={})
    rows = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    with BackgroundWriter(writer) as background:
        for start in range(0, 3000, 64):
            background.write(rows[start : start + 64])
    writer.complete()
    np.testing.assert_allclose(store.read_features("e", "t", "u").features, rows, rtol=1e-3, atol=1e-3)


def test_a_failed_write_is_raised_to_the_producer_and_the_entry_stays_incomplete(tmp_path):
    store = FeatureStore(tmp_path / "store")
    writer = store.begin_features("e", "t", "u", n_rows=10, dim=2, attrs={})
    with pytest.raises(ValueError, match="past the entry's 10 rows"), BackgroundWriter(writer) as background:
        background.write(np.zeros((8, 2)))
        background.write(np.zeros((8, 2)))  # 16 rows into 10: the thread's error
        for _ in range(50):  # later writes see it at the latest on close
            background.write(np.zeros((0, 2)))
    assert not store.is_complete("features/e/t/u")


def test_leaving_on_an_error_stops_the_thread_and_keeps_the_first_error(tmp_path):
    writer = FeatureStore(tmp_path / "store").begin_features("e", "t", "u", n_rows=4, dim=2, attrs={})
    background = BackgroundWriter(writer)
    with pytest.raises(KeyboardInterrupt), background:
        background.write(np.zeros((2, 2)))
        raise KeyboardInterrupt
    assert not background._thread.is_alive()
