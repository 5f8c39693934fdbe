"""The built-in encoder entries: architectures from timm, configurations from the model cards.

Each entry's numbers (architecture arguments, input size, interpolation, crop, mean/std, output
rule, embedding width, recommended µm/px and tile size) are those its authors publish with the
weights: the model card, or the ``config.json`` of its Hugging Face repository.
"""

from __future__ import annotations

from dataclasses import replace

from timm.layers import SwiGLUPacked
from torch import nn

from wsi_pipeline.features.registry import (
    EncoderSpec,
    layer_norm,
    register_encoder,
    vit_cfg,
)

#: Seed of the demo encoder's random weights: fixed, so its features (and store key) never move.
DEMO_SEED = 20240601

#: Bioptimus' normalisation (H-optimus-0 and -1, H0-mini), from their model cards.
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

#: The SwiGLU feed-forward (fused in one packed linear layer) used by Virchow, UNI2-h, H0-mini.
SWIGLU = {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}

#: Files a Hugging Face repository may hold the weights in (timm exports both).
HF_FILES = ("model.safetensors", "pytorch_model.bin")

ENTRIES = (
    EncoderSpec(
        name="uni",
        architecture="vit_large_patch16_224",
        model_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        pretrained_cfg=vit_cfg(224),
        output="class_token",
        dim=1024,
        recommended_mpp=0.5,
        recommended_tile_px=256,
        weights_files=("pytorch_model.bin",),
        hf_repo="MahmoodLab/UNI",
        description="UNI ViT-L/16 (Mass General Brigham): 20x tiles resized to 224 px, class token",
    ),
    EncoderSpec(
        name="uni2-h",
        architecture="vit_giant_patch14_224",
        model_kwargs={
            "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True, **SWIGLU,
        },
        pretrained_cfg=vit_cfg(224),
        output="class_token",
        dim=1536,
        recommended_mpp=0.5,
        recommended_tile_px=256,
        weights_files=("pytorch_model.bin",),
        hf_repo="MahmoodLab/UNI2-h",
        description="UNI2-h ViT-H/14 with 8 registers (Mass General Brigham): class token",
    ),
    EncoderSpec(
        name="virchow",
        architecture="vit_huge_patch14_224",
        model_kwargs={"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True, **SWIGLU},
        pretrained_cfg=vit_cfg(224, interpolation="bicubic"),
        output="class_token+mean_patch",
        dim=2560,
        recommended_mpp=0.5,
        recommended_tile_px=224,
        weights_files=HF_FILES,
        hf_repo="paige-ai/Virchow",
        description="Virchow ViT-H/14 (Paige): class token + mean of patch tokens",
    ),
    EncoderSpec(
        name="h-optimus-0",
        architecture="vit_giant_patch14_reg4_dinov2",
        model_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        pretrained_cfg=vit_cfg(224, interpolation="bicubic", mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD),
        output="class_token",
        dim=1536,
        recommended_mpp=0.5,
        recommended_tile_px=224,
        weights_files=("pytorch_model.bin", "model.safetensors"),
        hf_repo="bioptimus/H-optimus-0",
        description="H-optimus-0 ViT-g/14 with 4 registers (Bioptimus): 224-px tiles at 0.5 µm/px, class token",
    ),
    EncoderSpec(
        name="h0-mini",
        architecture="vit_base_patch14_reg4_dinov2",
        model_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False, **SWIGLU},
        pretrained_cfg=vit_cfg(224, interpolation="bicubic", mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD),
        output="class_token",
        dim=768,
        recommended_mpp=0.5,
        recommended_tile_px=224,
        weights_files=HF_FILES,
        hf_repo="bioptimus/H0-mini",
        description="H0-mini ViT-B/14 with 4 registers, distilled from H-optimus-1 (Bioptimus): class token",
    ),
    EncoderSpec(
        name="gigapath",
        architecture="vit_giant_patch14_dinov2",
        model_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "mlp_ratio": 5.33334},
        # The model card resizes to 256 (bicubic) and centre-crops 224: timm's crop_pct 0.875.
        pretrained_cfg=vit_cfg(224, interpolation="bicubic", crop_pct=224 / 256),
        output="class_token",
        dim=1536,
        recommended_mpp=0.5,
        recommended_tile_px=256,
        weights_files=("pytorch_model.bin",),
        hf_repo="prov-gigapath/prov-gigapath",
        description="Prov-GigaPath tile encoder ViT-g/16 (Providence, Microsoft): class token",
    ),
    EncoderSpec(
        name="phikon",
        architecture="vit_base_patch16_224",
        # transformers' ViT normalises with eps 1e-12 where timm uses 1e-6.
        model_kwargs={"img_size": 224, "norm_layer": layer_norm(1e-12)},
        pretrained_cfg=vit_cfg(224),
        output="class_token",
        dim=768,
        recommended_mpp=0.5,
        recommended_tile_px=224,
        weights_files=HF_FILES,
        hf_repo="owkin/phikon",
        key_layout="hf-vit",
        description="Phikon ViT-B/16 (Owkin), a transformers ViTModel: class token",
    ),
    EncoderSpec(
        name="phikon-v2",
        architecture="vit_large_patch16_224",
        model_kwargs={"img_size": 224, "init_values": 1e-5},
        pretrained_cfg=vit_cfg(224),
        output="class_token",
        dim=1024,
        recommended_mpp=0.5,
        recommended_tile_px=224,
        weights_files=HF_FILES,
        hf_repo="owkin/phikon-v2",
        key_layout="hf-dinov2",
        description="Phikon-v2 ViT-L/16 (Owkin), a transformers Dinov2Model: class token",
    ),
    EncoderSpec(
        name="resnet50-trunc",
        architecture="resnet50",
        truncate_after="layer3",
        pretrained_cfg=vit_cfg(224),
        output="pooled",
        dim=1024,
        recommended_mpp=0.5,
        recommended_tile_px=256,
        weights_files=(*HF_FILES, "resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
        hf_repo="timm/resnet50.tv_in1k",
        key_layout="resnet-truncated",
        description="ImageNet ResNet-50 cut after its third stage, average-pooled (the classic CLAM baseline)",
    ),
    EncoderSpec(
        name="dinov2-vitb14",
        architecture="vit_base_patch14_dinov2",
        model_kwargs={"img_size": 224},
        pretrained_cfg=vit_cfg(224, interpolation="bicubic", crop_pct=224 / 256),
        output="class_token",
        dim=768,
        recommended_mpp=None,
        recommended_tile_px=224,
        weights_files=(*HF_FILES, "dinov2_vitb14_pretrain.pth"),
        hf_repo="timm/vit_base_patch14_dinov2.lvd142m",
        description="DINOv2 ViT-B/14 (Meta), natural images: for the non-pathology challenges",
    ),
    EncoderSpec(
        name="dinov2-vitl14",
        architecture="vit_large_patch14_dinov2",
        model_kwargs={"img_size": 224},
        pretrained_cfg=vit_cfg(224, interpolation="bicubic", crop_pct=224 / 256),
        output="class_token",
        dim=1024,
        recommended_mpp=None,
        recommended_tile_px=224,
        weights_files=(*HF_FILES, "dinov2_vitl14_pretrain.pth"),
        hf_repo="timm/vit_large_patch14_dinov2.lvd142m",
        description="DINOv2 ViT-L/14 (Meta), natural images: for the non-pathology challenges",
    ),
    EncoderSpec(
        name="demo-resnet18-random",
        architecture="resnet18",
        pretrained_cfg=vit_cfg(128),
        output="pooled",
        dim=512,
        recommended_mpp=1.0,
        recommended_tile_px=128,
        random_seed=DEMO_SEED,
        is_demo=True,
        description="DEMO ONLY: ResNet-18 with fixed random weights (no download, no pathology training)",
    ),
)

_BY_NAME = {entry.name: entry for entry in ENTRIES}

#: Same family, other weights: each differs from its sibling only where its card says so.
SIBLINGS = (
    # Virchow2: four register tokens (skipped by the patch mean), otherwise Virchow's recipe.
    replace(_BY_NAME["virchow"], name="virchow2", model_kwargs={**_BY_NAME["virchow"].model_kwargs, "reg_tokens": 4},
            hf_repo="paige-ai/Virchow2",
            description="Virchow2 ViT-H/14 with 4 registers (Paige): class token + mean of patch tokens"),
    # H-optimus-1: H-optimus-0's architecture and preprocessing, new weights.
    replace(_BY_NAME["h-optimus-0"], name="h-optimus-1", hf_repo="bioptimus/H-optimus-1",
            description="H-optimus-1 ViT-g/14 with 4 registers (Bioptimus): 224-px tiles at 0.5 µm/px, class token"),
)

for _entry in (*ENTRIES, *SIBLINGS):
    register_encoder(_entry)
