"""Encoder registry and offline weights: UNI from a checkpoint the test creates, the demo encoder."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features import ENCODERS, get_encoder_spec, load_encoder
from wsi_pipeline.features.encoder import encoder_id_for
from wsi_pipeline.store.keys import file_sha256
from wsi_pipeline.features.encoders import build_uni


def test_registry_knows_uni_with_published_settings():
    spec = get_encoder_spec("uni")
    assert spec.dim == 1024 and spec.input_px == 224
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert spec.recommended_mpp == 0.5 and not spec.is_demo
    assert "demo-resnet18-random" in ENCODERS and get_encoder_spec("demo-resnet18-random").is_demo


def test_unknown_encoder_lists_known_ones():
    with pytest.raises(WSIPipelineError, match="uni"):
        get_encoder_spec("unii")


def test_missing_uni_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WSIPipelineError, match=r"never downloaded[\s\S]*uni/pytorch_model\.bin"):
        load_encoder("uni", device="cpu")


def test_uni_loads_a_checkpoint_in_the_real_key_layout(tmp_path, monkeypatch):
    # Random weights saved under UNI's architecture (timm ViT-L/16, layer scale) stand in for the real file.
    with torch.device("meta"):
        reference = timm.create_model("vit_large_patch16_224", init_values=1e-5, num_classes=0, dynamic_img_size=True)
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.empty(v.shape).uniform_(-0.03, 0.03, generator=generator) for k, v in reference.state_dict().items()}
    reference.load_state_dict(state, assign=True)
    assert "blocks.0.ls1.gamma" in state and len(state) == 342  # layer scale: part of UNI's key layout
    folder = tmp_path / "uni"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    encoder = load_encoder("uni", device="cpu")
    assert encoder.weights_path == str(folder / "pytorch_model.bin")
    assert encoder.encoder_id.startswith("uni-") and len(encoder.weights_sha256) == 64
    assert encoder_id_for("uni") == encoder.encoder_id
    tiles = np.random.default_rng(0).integers(0, 255, (1, 256, 256, 3), dtype=np.uint8)
    features = encoder.embed(tiles)
    assert features.shape == (1, 1024) and np.isfinite(features).all()
    with torch.inference_mode():
        expected = reference.eval()(encoder.preprocess(tiles)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "wrong.bin"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(3)}, path)
    with pytest.raises(WSIPipelineError, match="does not match the 'uni' architecture"):
        build_uni(path)


def test_demo_encoder_is_deterministic_and_named_as_demo():
    first = load_encoder("demo-resnet18-random", device="cpu")
    provenance = first.provenance()
    assert provenance["encoder_is_demo"] is True and "DEMO" in provenance["encoder_description"]
    rebuilt = get_encoder_spec("demo-resnet18-random").build(None)
    for key, tensor in rebuilt.state_dict().items():
        torch.testing.assert_close(tensor, first.model.state_dict()[key])
    tiles = np.random.default_rng(1).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    assert first.embed(tiles).shape == (3, 512)


def test_preprocess_resizes_and_normalises():
    encoder = load_encoder("demo-resnet18-random", device="cpu")
    white = np.full((1, 200, 200, 3), 255, dtype=np.uint8)
    batch = encoder.preprocess(white)
    assert tuple(batch.shape) == (1, 3, 128, 128)
    expected = (1 - np.array(encoder.spec.mean)) / np.array(encoder.spec.std)
    np.testing.assert_allclose(batch[0, :, 0, 0].numpy(), expected, rtol=1e-5)


def test_encoder_id_of_a_checkpoint_hashes_the_file_without_building_the_model(tmp_path, monkeypatch):
    import dataclasses

    weights = tmp_path / "uni" / "pytorch_model.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"not a real checkpoint, only hashed")

    def refuse(_path):
        raise AssertionError("the model must not be built to compute its store key")

    monkeypatch.setitem(ENCODERS, "uni", dataclasses.replace(ENCODERS["uni"], build=refuse))
    monkeypatch.setenv("WSI_PIPELINE_WEIGHTS", str(tmp_path))
    assert encoder_id_for("uni") == f"uni-{file_sha256(str(weights))[:12]}"
