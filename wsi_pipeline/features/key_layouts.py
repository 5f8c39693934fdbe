"""Published checkpoint key layouts, turned into timm's.

Each encoder's weights come as their authors published them: most as a timm state dict
(UNI, Virchow, H-optimus, GigaPath), some as Hugging Face ``transformers`` models (Phikon is a
``ViTModel``, Phikon-v2 a ``Dinov2Model``), some with a wrapper prefix (``module.``, ``model.``)
or with layers the pipeline cuts off (ResNet-50's last stage). A layout function maps such a state
dict onto the timm architecture it is built as, so every entry loads through one path; timm's own
``checkpoint_filter_fn`` then does what it knows (DINOv2's original layout, position-embedding
resampling).

Every function takes and returns a ``{key: tensor}`` mapping; none copies tensor data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

StateDict = dict[str, torch.Tensor]

#: Prefixes wrappers add to every key: DataParallel/DDP, Lightning, some hub exports.
WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def strip_wrapper_prefix(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> StateDict:
    """Remove one prefix shared by every key (``module.`` from DDP, ``model.``...), repeatedly.

    Only a prefix that *all* keys carry is removed, so a layout whose keys merely start with
    ``encoder.`` (a ``transformers`` model) is left alone.
    """
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in prefixes:
            if all(key.startswith(prefix) for key in out):
                out = {key[len(prefix) :]: value for key, value in out.items()}
                changed = True
    return out


def timm_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A timm state dict, perhaps under a wrapper prefix (UNI, Virchow, H-optimus, GigaPath)."""
    return strip_wrapper_prefix(state)


def _qkv(state: Mapping[str, torch.Tensor], base: str, kind: str) -> torch.Tensor:
    return torch.cat([state[f"{base}.{part}.{kind}"] for part in ("query", "key", "value")], dim=0)


def _hf_blocks(state: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> StateDict:
    """Blocks of a ``transformers`` ViT-like encoder: ``encoder.layer.N.*`` → ``blocks.N.*``.

    Queries, keys and values are separate linear layers there and one ``qkv`` layer in timm.
    """
    out: StateDict = {}
    indices = sorted({int(m.group(1)) for key in state if (m := re.match(r"encoder\.layer\.(\d+)\.", key))})
    for i in indices:
        src, dst = f"encoder.layer.{i}", f"blocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{dst}.attn.qkv.{kind}"] = _qkv(state, f"{src}.attention.attention", kind)
        for theirs, ours in names.items():
            key = f"{src}.{theirs}"
            if key in state:
                out[f"{dst}.{ours}"] = state[key]
    return out


#: transformers ``ViTLayer`` submodules → timm ``Block`` ones (qkv handled apart).
HF_VIT_BLOCK = {
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
}

#: transformers ``Dinov2Layer`` submodules → timm ``Block`` ones (layer scale included).
HF_DINOV2_BLOCK = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}


def _hf_embeddings(state: Mapping[str, torch.Tensor]) -> StateDict:
    out = {
        "cls_token": state["embeddings.cls_token"],
        "pos_embed": state["embeddings.position_embeddings"],
        "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": state["layernorm.weight"],
        "norm.bias": state["layernorm.bias"],
    }
    if "embeddings.register_tokens" in state:
        out["reg_token"] = state["embeddings.register_tokens"]
    return out


def hf_vit_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A ``transformers`` ``ViTModel`` (Phikon), with or without its ``vit.`` prefix.

    The pooler (a dense layer + tanh over the class token, trained for no task here) is dropped:
    the embedding is the last layer's normalised class token, as the model card says.
    """
    state = strip_wrapper_prefix(state, ("vit.", *WRAPPER_PREFIXES))
    return {**_hf_embeddings(state), **_hf_blocks(state, HF_VIT_BLOCK)}


def hf_dinov2_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A ``transformers`` ``Dinov2Model`` (Phikon-v2); its mask token, used in training only, is dropped."""
    state = strip_wrapper_prefix(state, ("dinov2.", *WRAPPER_PREFIXES))
    return {**_hf_embeddings(state), **_hf_blocks(state, HF_DINOV2_BLOCK)}


def truncated_resnet_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """An ImageNet ResNet (torchvision or timm keys) cut after its third stage: ``layer4`` and ``fc`` go."""
    state = strip_wrapper_prefix(state)
    return {key: value for key, value in state.items() if not key.startswith(("layer4.", "fc."))}


#: Layout name (an encoder entry's ``key_layout``) → converter.
KEY_LAYOUTS: dict[str, Callable[[Mapping[str, torch.Tensor]], StateDict]] = {
    "timm": timm_layout,
    "hf-vit": hf_vit_layout,
    "hf-dinov2": hf_dinov2_layout,
    "resnet-truncated": truncated_resnet_layout,
}
