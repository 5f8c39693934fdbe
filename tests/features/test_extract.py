"""Extraction into the store: complete entries match the encoder; interrupted ones never look complete."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.config import TilingConfig
from wsi_pipeline.features import extract_slide_features, load_encoder
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import SyntheticSlideSpec, generate_slide
from wsi_pipeline.store import FeatureStore, features_key
from wsi_pipeline.tiling import tile_slide


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "s.tiff"
    generate_slide(SyntheticSlideSpec(width=1536, height=1536, mpp=0.5, positive=False, seed=5, n_levels=3), path)
    with open_source("wsi", path) as slide:
        tiling = tile_slide(slide, TilingConfig(mpp=1.0, tile_px=128))
    return path, tiling


def extract(path, tiling, store, encoder):
    with open_source("wsi", path) as slide:
        return extract_slide_features(
            slide, tiling.coords, tiling.geometry.size_level0, 128, encoder, store,
            tiling_id="t", slide_uid="u", batch_size=4, attrs={"slide_path": str(path)},
        )


def test_interrupted_extraction_leaves_no_complete_entry(tiled, tmp_path, monkeypatch):
    path, tiling = tiled
    assert len(tiling.coords) > 8  # several batches of 4, so the failure is half-way
    store = FeatureStore(tmp_path / "store")
    encoder = load_encoder("demo-resnet18-random", device="cpu")
    calls = {"n": 0}
    real_embed = type(encoder).embed

    def failing_embed(self, tiles, stain_source=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what a killed worker or Ctrl-C looks like mid-slide
        return real_embed(self, tiles, stain_source)

    monkeypatch.setattr(type(encoder), "embed", failing_embed)
    with pytest.raises(KeyboardInterrupt):
        extract(path, tiling, store, encoder)
    key = features_key(encoder.encoder_id, "t", "u")
    assert not store.is_complete(key)
    assert store.attrs(key).get("complete") is False
    monkeypatch.setattr(type(encoder), "embed", real_embed)
    n = extract(path, tiling, store, encoder)
    assert n == len(tiling.coords) and store.is_complete(key)
    entry = store.read_features(encoder.encoder_id, "t", "u")
    with open_source("wsi", path) as slide:
        first = np.stack([slide.read_tile(int(x), int(y), tiling.geometry.size_level0, 128) for x, y in tiling.coords[:4]])
        last = next(slide.read_tiles(tiling.coords[-2:], tiling.geometry.size_level0, 128, 8))
    np.testing.assert_allclose(entry.features[:4], encoder.embed(first), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(entry.features[-2:], encoder.embed(last), rtol=2e-3, atol=2e-3)
    assert entry.attrs["encoder_is_demo"] is True and entry.attrs["weights_sha256"] == encoder.weights_sha256
    assert entry.attrs["slide_path"] == str(path) and entry.attrs["preprocessing"]["resize_to"] == 128


def test_reader_errors_surface_in_the_caller_and_the_reader_stops(tiled):
    from wsi_pipeline.features.tile_loader import iter_tile_batches

    path, tiling = tiled

    class Failing:
        def __init__(self):
            self.batches = 0

        def read_tiles(self, coords, size, px, batch):
            for _ in range(2):
                self.batches += 1
                yield np.zeros((batch, px, px, 3), np.uint8)
            raise OSError("disk went away")

    source = Failing()
    seen = []
    with pytest.raises(OSError, match="disk went away"):
        for batch in iter_tile_batches(source, tiling.coords, 16.0, 8, 2):
            seen.append(batch.shape)
    assert seen == [(2, 8, 8, 3), (2, 8, 8, 3)]

    with open_source("wsi", path) as slide:
        batches = iter_tile_batches(slide, tiling.coords, tiling.geometry.size_level0, 128, 2)
        assert next(batches).shape == (2, 128, 128, 3)
        batches.close()  # the consumer stops early: the reader thread must not hang on a full queue
