"""Building an entry's network with timm and loading its published checkpoint into it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features.key_layouts import KEY_LAYOUTS
from wsi_pipeline.features.registry import EncoderSpec
from wsi_pipeline.features.weights import read_state_dict


class TileEmbedder(nn.Module):
    """A timm network that returns one embedding per tile, by the entry's output rule.

    ``class_token`` and ``class_token+mean_patch`` read the tokens of ``forward_features`` (the
    last layer, normalised); ``num_prefix_tokens`` counts the class and register tokens, which
    the patch mean leaves out.
    """

    def __init__(self, network: nn.Module, output: str) -> None:
        super().__init__()
        self.network = network
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.output == "pooled":
            return self.network(images)
        tokens = self.network.forward_features(images)
        if self.output == "class_token":
            return tokens[:, 0]
        patches = tokens[:, getattr(self.network, "num_prefix_tokens", 1) :]
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def create_network(spec: EncoderSpec, *, meta: bool = False, **overrides: Any) -> nn.Module:
    """The entry's bare timm network (random or empty weights), cut short where the entry says so.

    Parameters
    ----------
    meta
        Build on the meta device (no memory, no random initialisation): for a network whose
        weights are about to be loaded, or to count its parameters.
    overrides
        Architecture arguments replacing the entry's (tests build the real width at a smaller depth).
    """
    kwargs = {**spec.model_kwargs, **overrides, "num_classes": 0}
    with torch.device("meta") if meta else nullcontext():
        if spec.factory is not None:
            network = spec.factory(**{**spec.model_kwargs, **overrides})
        else:
            network = timm.create_model(spec.architecture, pretrained=False, pretrained_cfg_overlay=dict(spec.pretrained_cfg), **kwargs)
    if spec.truncate_after is not None:
        # Later stages become identities: the pooled output is then the kept stage's.
        stages = [name for name, _ in network.named_children() if name.startswith("layer")]
        for name in stages[stages.index(spec.truncate_after) + 1 :]:
            setattr(network, name, nn.Identity())
        network.num_features = next(info["num_chs"] for info in network.feature_info if info["module"] == spec.truncate_after)
    return network


def checkpoint_filter(network: nn.Module) -> Callable | None:
    """timm's own ``checkpoint_filter_fn`` for the network's family, if it has one.

    It converts layouts timm knows (DINOv2's original checkpoints) and resamples position
    embeddings to the built image size.
    """
    return getattr(sys.modules.get(type(network).__module__), "checkpoint_filter_fn", None)


def load_published_checkpoint(network: nn.Module, spec: EncoderSpec, path: Path) -> nn.Module:
    """Load a checkpoint in the entry's published layout into ``network``, strictly.

    Raises
    ------
    WSIPipelineError
        On an unreadable file or keys that do not match the architecture (naming a few).
    """
    try:
        state = KEY_LAYOUTS[spec.key_layout](read_state_dict(path, spec.name))
    except KeyError as missing:
        raise WSIPipelineError(
            f"checkpoint does not match the '{spec.name}' architecture: it is not in the {spec.key_layout} key layout "
            f"its authors published (no key {missing})",
            where=str(path),
            fix=f"use the official '{spec.name}' checkpoint, or pick the encoder this file belongs to",
        ) from None
    filter_fn = checkpoint_filter(network)
    if filter_fn is not None:
        try:
            state = filter_fn(state, network)
        except Exception as error:  # noqa: BLE001 - whatever timm trips on, the file is the user's to fix
            raise WSIPipelineError(
                f"checkpoint does not fit the '{spec.name}' architecture: {type(error).__name__}: {error}",
                where=str(path),
                fix=f"use the official '{spec.name}' checkpoint, or pick the encoder this file belongs to",
            ) from None
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    if missing or unexpected or wrong_shape:
        raise WSIPipelineError(
            f"checkpoint does not match the '{spec.name}' architecture: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), {len(wrong_shape)} of another shape (e.g. {wrong_shape[:3]})",
            where=str(path),
            fix=f"use the official '{spec.name}' checkpoint ({spec.key_layout} key layout), or pick the encoder this file belongs to",
        )
    # assign=True adopts the checkpoint's tensors, so a network built on the meta device works.
    network.load_state_dict(state, strict=True, assign=True)
    left = [key for key, tensor in [*network.named_parameters(), *network.named_buffers()] if tensor.is_meta]
    if left:
        raise WSIPipelineError(
            f"checkpoint left tensors of the '{spec.name}' architecture unset: {left[:3]}",
            where=str(path),
            fix=f"use the official '{spec.name}' checkpoint",
        )
    return network


def build_network(spec: EncoderSpec, weights: Path | None, **overrides: Any) -> TileEmbedder:
    """The entry's network with its weights, wrapped to return one embedding per tile.

    ``weights`` is the checkpoint file (``None`` only for the seeded demo encoder, whose random
    weights are fixed by its seed).
    """
    if weights is None:
        if spec.random_seed is None:
            raise WSIPipelineError(f"encoder '{spec.name}' needs its checkpoint", where="features.weights", fix="see README: encoder weights")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.random_seed)
            network = create_network(spec, **overrides)
    else:
        # Built on the meta device: random initialisation of a billion parameters would be thrown away.
        network = load_published_checkpoint(create_network(spec, meta=True, **overrides), spec, weights)
    return TileEmbedder(network, spec.output)
