"""Stain normalisation as an encoder's preprocessing: it runs before the rest, and its method,
target and source mode are part of the encoder's store key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsi_pipeline.config import TilingConfig
from wsi_pipeline.config.workflow import FeaturesConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features import extract_slide_features, load_encoder
from wsi_pipeline.features.encoder import encoder_id_for
from wsi_pipeline.features.stain import MacenkoTarget, normalise
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import SyntheticSlideSpec, generate_slide
from wsi_pipeline.store import FeatureStore
from wsi_pipeline.tiling import tile_slide

#: Haematoxylin and eosin optical-density directions (rows), for Beer–Lambert tiles.
HE = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])


def he_tiles(n: int, size: int, seed: int, stains: np.ndarray = HE) -> np.ndarray:
    """(n, size, size, 3) uint8 tiles rendered from random H and E concentrations."""
    rng = np.random.default_rng(seed)
    conc = rng.gamma(2.0, 0.35, (n, size, size, 2))
    od = conc @ (stains / np.linalg.norm(stains, axis=1, keepdims=True))
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)


def stain(**fields) -> FeaturesConfig:
    return FeaturesConfig(stain_normalisation=fields)


@pytest.fixture
def reference_image(tmp_path):
    path = tmp_path / "reference.png"
    Image.fromarray(he_tiles(1, 96, seed=9, stains=np.array([[0.55, 0.75, 0.37], [0.20, 0.85, 0.48]]))[0]).save(path)
    return path


def test_each_stain_setting_gives_its_own_encoder_key(reference_image):
    keys = {
        "none": encoder_id_for("demo-resnet18-random"),
        "macenko": encoder_id_for("demo-resnet18-random", stain=stain(method="macenko").stain),
        "macenko-slide": encoder_id_for("demo-resnet18-random", stain=stain(method="macenko", source="slide").stain),
        "macenko-ref": encoder_id_for("demo-resnet18-random", stain=stain(method="macenko", target=str(reference_image)).stain),
        "reinhard-ref": encoder_id_for("demo-resnet18-random", stain=stain(method="reinhard", target=str(reference_image)).stain),
    }
    assert len(set(keys.values())) == len(keys), keys
    # The same settings, the same key: a rerun reuses its features.
    assert encoder_id_for("demo-resnet18-random", stain=stain(method="macenko").stain) == keys["macenko"]


def test_stain_normalisation_runs_before_the_encoders_own_preprocessing():
    plain = load_encoder("demo-resnet18-random", device="cpu")
    normalised = load_encoder("demo-resnet18-random", device="cpu", stain=stain(method="macenko").stain)
    assert normalised.provenance()["preprocessing"]["stain"]["target"] == MacenkoTarget().to_dict()
    tiles = he_tiles(3, 128, seed=1)
    by_hand = normalise(torch.from_numpy(tiles).permute(0, 3, 1, 2), MacenkoTarget()).permute(0, 2, 3, 1).numpy()
    assert np.abs(by_hand.astype(int) - tiles.astype(int)).mean() > 2  # the stains really moved
    # The normalised encoder on raw tiles = the plain encoder on tiles normalised by hand
    # (up to the uint8 rounding of the by-hand image).
    np.testing.assert_allclose(normalised.embed(tiles), plain.embed(by_hand), atol=0.05, rtol=0.02)


def test_reinhard_needs_a_reference_and_a_missing_one_names_the_field(tmp_path):
    with pytest.raises(WSIPipelineError, match="'reinhard' has no default target"):
        load_encoder("demo-resnet18-random", device="cpu", stain=stain(method="reinhard").stain)
    with pytest.raises(WSIPipelineError, match=r"stain_normalisation.target[\s\S]*no stain reference image"):
        encoder_id_for("demo-resnet18-random", stain=stain(method="macenko", target=str(tmp_path / "nope.png")).stain)
    with pytest.raises(Exception, match="source"):
        stain(method="macenko", source="cohort")


def test_per_slide_stains_are_fitted_once_on_a_sample_and_recorded(tmp_path):
    path = tmp_path / "s.tiff"
    generate_slide(SyntheticSlideSpec(width=1536, height=1536, mpp=0.5, positive=True, seed=3, n_levels=3), path)
    with open_source("wsi", path) as slide:
        tiling = tile_slide(slide, TilingConfig(mpp=1.0, tile_px=128))
    store = FeatureStore(tmp_path / "store")
    entries = {}
    for source in ("tile", "slide"):
        encoder = load_encoder("demo-resnet18-random", device="cpu", stain=stain(method="macenko", source=source, slide_sample_tiles=16).stain)
        with open_source("wsi", path) as slide:
            extract_slide_features(slide, tiling.coords, tiling.geometry.size_level0, 128, encoder, store,
                                   tiling_id="t", slide_uid="u", batch_size=8, attrs={})
        entries[source] = store.read_features(encoder.encoder_id, "t", "u")
    assert "stain_source" not in entries["tile"].attrs
    fitted = entries["slide"].attrs["stain_source"]
    assert fitted["method"] == "macenko" and len(fitted["stains"]) == 2
    assert entries["slide"].attrs["preprocessing"]["stain"]["source"] == "slide"
    assert entries["tile"].features.shape == entries["slide"].features.shape
    assert not np.allclose(entries["tile"].features, entries["slide"].features)
