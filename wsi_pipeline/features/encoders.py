"""The built-in encoders. Each registers an :class:`EncoderSpec`; architectures come from timm."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features.registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, register_encoder
from wsi_pipeline.features.weights import load_checkpoint

#: Seed of the demo encoder's random weights: fixed, so its features (and store key) never move.
DEMO_SEED = 20240601


def build_uni(weights: Path | None) -> nn.Module:
    """UNI (Chen et al., 2024): ViT-L/16 at 224 px, layer-scale 1e-5, class token as embedding."""
    if weights is None:
        raise WSIPipelineError("UNI needs its checkpoint", where="features.weights", fix="see README: encoder weights")
    # Built on the meta device: random initialisation of 300M parameters would be thrown away.
    with torch.device("meta"):
        model = timm.create_model(
            "vit_large_patch16_224",
            img_size=224,
            patch_size=16,
            init_values=1e-5,
            num_classes=0,
            dynamic_img_size=True,
            pretrained=False,
        )
    return load_checkpoint(model, weights, "uni")


def build_demo_resnet18(weights: Path | None) -> nn.Module:
    """A ResNet-18 with fixed random weights: needs no download, knows no pathology.

    Random convolutional features still separate colour and texture, which is all the
    synthetic demo cohort needs; its results say nothing about real slides.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    return model


register_encoder(
    EncoderSpec(
        name="uni",
        build=build_uni,
        dim=1024,
        input_px=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        recommended_mpp=0.5,
        recommended_tile_px=256,
        weights_file="pytorch_model.bin",
        hf_repo="MahmoodLab/UNI",
        description="UNI ViT-L/16 (Mass General Brigham), 20x tiles resized to 224 px",
    )
)

register_encoder(
    EncoderSpec(
        name="demo-resnet18-random",
        build=build_demo_resnet18,
        dim=512,
        input_px=128,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        recommended_mpp=1.0,
        recommended_tile_px=128,
        weights_file=None,
        is_demo=True,
        description="DEMO ONLY: ResNet-18 with fixed random weights (no download, no pathology training)",
    )
)
