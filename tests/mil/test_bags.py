"""Bags turned into float32: conversion into reused buffers."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.mil.bags import Scratch, as_float32
from wsi_pipeline.mil.standardise import FeatureStats, StandardisedBags


def test_as_float32_equals_numpy_conversion_into_a_given_buffer_or_a_new_one():
    rows = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float16)
    expected = rows.astype(np.float32)
    np.testing.assert_array_equal(as_float32(rows), expected)
    out = np.full((37, 5), np.nan, dtype=np.float32)
    assert as_float32(rows, out) is out
    np.testing.assert_array_equal(out, expected)
    frozen = rows.copy()
    frozen.flags.writeable = False  # e.g. a memory-mapped store chunk
    np.testing.assert_array_equal(as_float32(frozen[::2]), expected[::2])


def test_scratch_reuses_a_slots_buffer_and_grows_it():
    scratch = Scratch()
    a = scratch.array((4, 3))
    b = scratch.array((2, 3))
    assert np.shares_memory(a, b) and b.shape == (2, 3)
    assert not np.shares_memory(a, scratch.array((4, 3), slot=1))
    c = scratch.array((10, 3))
    assert c.shape == (10, 3) and not np.shares_memory(a, c)


def test_standardising_into_a_buffer_leaves_the_bag_untouched():
    bag = np.random.default_rng(1).normal(3.0, 2.0, size=(20, 4)).astype(np.float16)
    original = bag.copy()
    stats = FeatureStats(np.full(4, 3.0, np.float32), np.full(4, 2.0, np.float32))
    view = StandardisedBags({"p": bag}, stats)
    out = Scratch().array(bag.shape)
    got = view.apply(bag, out)
    np.testing.assert_allclose(got, (bag.astype(np.float32) - 3.0) / 2.0, rtol=1e-6)
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(bag, original)
    np.testing.assert_allclose(view["p"], got)
