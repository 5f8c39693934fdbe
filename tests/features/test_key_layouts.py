"""Published key layouts → timm: Phikon and Phikon-v2 against the transformers models they were
published as (random weights at the real width, two layers deep), and wrapper prefixes."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.features import get_encoder_spec
from wsi_pipeline.features.key_layouts import (
    strip_wrapper_prefix,
    truncated_resnet_layout,
)
from wsi_pipeline.features.network import build_network

transformers = pytest.importorskip("transformers", reason="transformers (dev extra) is the reference for Phikon's layouts")


def save_random(model: torch.nn.Module, folder, seed: int) -> None:
    """Random weights, written by ``save_pretrained``: the layout of the files on the Hub
    (``encoder.layer.N.attention.attention.query``...), whatever transformers calls them in memory."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.empty(parameter.shape).uniform_(-0.05, 0.05, generator=generator))
    model.save_pretrained(folder)


def test_phikon_loads_a_transformers_vit_checkpoint_and_embeds_like_it(tmp_path):
    config = transformers.ViTConfig(hidden_size=768, num_hidden_layers=2, num_attention_heads=12, intermediate_size=3072,
                                    image_size=224, patch_size=16, qkv_bias=True, layer_norm_eps=1e-12)
    reference = transformers.ViTModel(config, add_pooling_layer=True).eval()
    save_random(reference, tmp_path, seed=3)
    embedder = build_network(get_encoder_spec("phikon"), tmp_path / "model.safetensors", depth=2).eval()
    images = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        expected = reference(pixel_values=images).last_hidden_state[:, 0]  # the model card's embedding
        features = embedder(images)
    assert features.shape == (2, 768)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_phikon_v2_loads_a_transformers_dinov2_checkpoint_and_embeds_like_it(tmp_path):
    config = transformers.Dinov2Config(hidden_size=1024, num_hidden_layers=2, num_attention_heads=16, mlp_ratio=4,
                                       image_size=224, patch_size=16, layerscale_value=1e-5)
    reference = transformers.Dinov2Model(config).eval()
    save_random(reference, tmp_path, seed=4)
    embedder = build_network(get_encoder_spec("phikon-v2"), tmp_path / "model.safetensors", depth=2).eval()
    images = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        expected = reference(pixel_values=images).last_hidden_state[:, 0]
        features = embedder(images)
    assert features.shape == (2, 1024)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_wrapper_prefixes_shared_by_every_key_are_removed():
    state = {"module.model.a.weight": torch.zeros(1), "module.model.b.bias": torch.zeros(1)}
    assert set(strip_wrapper_prefix(state)) == {"a.weight", "b.bias"}
    # A prefix only some keys carry is part of the layout, not a wrapper.
    mixed = {"encoder.layer.0.x": torch.zeros(1), "embeddings.cls_token": torch.zeros(1)}
    assert strip_wrapper_prefix(mixed) == mixed


def test_a_truncated_resnet_drops_its_last_stage_and_classifier():
    state = {"conv1.weight": torch.zeros(1), "layer3.0.conv1.weight": torch.zeros(1), "layer4.0.conv1.weight": torch.zeros(1),
             "fc.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}
    assert set(truncated_resnet_layout(state)) == {"conv1.weight", "layer3.0.conv1.weight"}
