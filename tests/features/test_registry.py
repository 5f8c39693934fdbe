"""Every registry entry: its model-card constants, its full-size architecture, and a random
checkpoint in its published key layout loaded into it (at the real width, one block deep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features import ENCODERS, get_encoder_spec
from wsi_pipeline.features.network import build_network, create_network
from wsi_pipeline.features.registry import OUTPUT_RULES

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BIOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))

#: From the model cards: dim, input side, interpolation, crop fraction, (mean, std), output rule,
#: µm/px and tile side the model was trained at.
MODEL_CARDS = {
    "uni": (1024, 224, "bilinear", 1.0, IMAGENET, "class_token", 0.5, 256),
    "uni2-h": (1536, 224, "bilinear", 1.0, IMAGENET, "class_token", 0.5, 256),
    "virchow": (2560, 224, "bicubic", 1.0, IMAGENET, "class_token+mean_patch", 0.5, 224),
    "virchow2": (2560, 224, "bicubic", 1.0, IMAGENET, "class_token+mean_patch", 0.5, 224),
    "h-optimus-0": (1536, 224, "bicubic", 1.0, BIOPTIMUS, "class_token", 0.5, 224),
    "h-optimus-1": (1536, 224, "bicubic", 1.0, BIOPTIMUS, "class_token", 0.5, 224),
    "h0-mini": (768, 224, "bicubic", 1.0, BIOPTIMUS, "class_token", 0.5, 224),
    "gigapath": (1536, 224, "bicubic", 0.875, IMAGENET, "class_token", 0.5, 256),
    "phikon": (768, 224, "bilinear", 1.0, IMAGENET, "class_token", 0.5, 224),
    "phikon-v2": (1024, 224, "bilinear", 1.0, IMAGENET, "class_token", 0.5, 224),
    "resnet50-trunc": (1024, 224, "bilinear", 1.0, IMAGENET, "pooled", 0.5, 256),
    "dinov2-vitb14": (768, 224, "bicubic", 0.875, IMAGENET, "class_token", None, 224),
    "dinov2-vitl14": (1024, 224, "bicubic", 0.875, IMAGENET, "class_token", None, 224),
    "demo-resnet18-random": (512, 128, "bilinear", 1.0, IMAGENET, "pooled", 1.0, 128),
}

#: Published parameter counts (millions) of the full networks, within 1%.
PUBLISHED_PARAMETERS_M = {
    "uni": 303, "uni2-h": 681, "virchow": 632, "virchow2": 632, "h-optimus-0": 1134, "h-optimus-1": 1134,
    "gigapath": 1134, "phikon": 85.8, "phikon-v2": 303, "dinov2-vitb14": 86, "dinov2-vitl14": 304, "resnet50-trunc": 8.5,
}


def test_every_entry_has_a_model_card_row_and_nothing_else_is_registered():
    assert set(MODEL_CARDS) <= set(ENCODERS)
    assert not [n for n in ENCODERS if n not in MODEL_CARDS and not n.startswith("bench-")]


@pytest.mark.parametrize("name", sorted(MODEL_CARDS))
def test_preprocessing_constants_match_the_model_card(name):
    dim, size, interpolation, crop, (mean, std), output, mpp, tile = MODEL_CARDS[name]
    spec = get_encoder_spec(name)
    config = spec.data_config()  # what timm's resolve_data_config makes of the entry
    assert spec.dim == dim and config["input_size"] == (3, size, size)
    assert config["interpolation"] == interpolation and config["crop_pct"] == pytest.approx(crop)
    assert config["mean"] == pytest.approx(mean) and config["std"] == pytest.approx(std)
    assert spec.output == output and output in OUTPUT_RULES
    assert spec.recommended_mpp == mpp and spec.recommended_tile_px == tile


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS_M))
def test_full_size_architecture_has_the_published_parameter_count(name):
    network = create_network(get_encoder_spec(name), meta=True)  # no memory, no initialisation
    millions = sum(p.numel() for p in network.parameters()) / 1e6
    assert millions == pytest.approx(PUBLISHED_PARAMETERS_M[name], rel=0.01)


def shallow(spec) -> dict:
    """One block instead of 12-40: the same width, tokens and per-block key layout."""
    return {"depth": 1} if spec.architecture.startswith("vit") else {}


def random_state(network: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.empty(v.shape).uniform_(-0.05, 0.05, generator=generator) if v.is_floating_point() else v.clone()
            for k, v in network.state_dict().items()}


TIMM_LAYOUT = [n for n in sorted(MODEL_CARDS) if ENCODERS[n].key_layout == "timm" and ENCODERS[n].needs_weights]


@pytest.mark.parametrize("name", TIMM_LAYOUT)
def test_entry_loads_a_random_checkpoint_in_its_published_timm_layout(name, tmp_path):
    spec = get_encoder_spec(name)
    reference = create_network(spec, **shallow(spec))
    state = random_state(reference, seed=1)
    reference.load_state_dict(state)
    if name.startswith("dinov2"):
        # Meta's own files: a mask token, and position embeddings for 518-px images (37 x 37 patches).
        published = dict(state, mask_token=torch.zeros(1, spec.dim))
        published["pos_embed"] = torch.nn.functional.interpolate(
            state["pos_embed"][:, 1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2), size=(37, 37), mode="bicubic"
        ).permute(0, 2, 3, 1).reshape(1, 37 * 37, -1)
        published["pos_embed"] = torch.cat([state["pos_embed"][:, :1], published["pos_embed"]], dim=1)
    else:
        published = state
    path = tmp_path / spec.weights_files[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(published, str(path))
    else:
        torch.save(published, path)

    embedder = build_network(spec, path, **shallow(spec)).eval()
    images = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        features = embedder(images)
        tokens = reference.eval().forward_features(images)
    assert features.shape == (2, spec.dim) and torch.isfinite(features).all()
    if name == "virchow2":  # the model card: class token + mean of tokens 5: (after 4 registers)
        expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
    elif name == "virchow":
        expected = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=-1)
    else:
        expected = tokens[:, 0]
    tolerance = 1e-2 if name.startswith("dinov2") else 1e-5  # resampled position embeddings
    torch.testing.assert_close(features, expected, atol=tolerance, rtol=tolerance)


def test_resnet50_trunc_loads_torchvision_weights_and_stops_after_the_third_stage(tmp_path):
    import torchvision

    reference = torchvision.models.resnet50(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet50-0676ba61.pth")  # torchvision's own layout, layer4 and fc included
    embedder = build_network(get_encoder_spec("resnet50-trunc"), tmp_path / "resnet50-0676ba61.pth").eval()
    images = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        x = reference.layer3(reference.layer2(reference.layer1(x)))
        expected = x.mean(dim=(2, 3))
        features = embedder(images)
    assert features.shape == (2, 1024)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_checkpoint_of_another_architecture_is_refused_naming_keys(tmp_path):
    path = tmp_path / "wrong.bin"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(3)}, path)
    with pytest.raises(WSIPipelineError, match=r"does not match the 'phikon' architecture|does not fit the 'phikon'"):
        build_network(get_encoder_spec("phikon"), path, depth=1)
    with pytest.raises(WSIPipelineError, match="does not match the 'uni' architecture"):
        build_network(get_encoder_spec("uni"), path, depth=1)


def test_a_pickled_object_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"weights": np.arange(3)}, path)  # a numpy array: refused by weights_only unpickling
    with pytest.raises(WSIPipelineError, match="cannot read the checkpoint"):
        build_network(get_encoder_spec("uni"), path, depth=1)


def test_any_timm_model_is_an_entry_with_timms_own_config():
    spec = get_encoder_spec("timm:vit_small_patch16_224.augreg_in21k_ft_in1k")
    assert spec.dim == 384 and spec.output == "pooled" and spec.hf_repo == "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    config = spec.data_config()
    assert config["mean"] == (0.5, 0.5, 0.5) and config["crop_pct"] == pytest.approx(0.9)
    with pytest.raises(WSIPipelineError, match="timm has no model 'vit_smoll"):
        get_encoder_spec("timm:vit_smoll_patch16_224")


def test_unknown_encoder_suggests_the_closest_name():
    with pytest.raises(WSIPipelineError, match="did you mean 'virchow2'"):
        get_encoder_spec("virchov2")


def test_a_checkpoint_saved_under_a_wrapper_prefix_loads(tmp_path):
    """Checkpoints saved from DataParallel or a Lightning module carry ``module.`` / ``model.`` on every key."""
    spec = get_encoder_spec("uni")
    reference = create_network(spec, depth=1)
    state = random_state(reference, seed=2)
    reference.load_state_dict(state)
    torch.save({f"module.model.{k}": v for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    embedder = build_network(spec, tmp_path / "pytorch_model.bin", depth=1).eval()
    images = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(embedder(images), reference.eval().forward_features(images)[:, 0])
