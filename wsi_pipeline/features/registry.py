"""The encoder registry, shaped like timm's: an architecture, its weights, and a pretrained config.

An entry (:class:`EncoderSpec`) keeps three things apart:

- the **architecture**: a timm model name and the keyword arguments its authors build it with;
- the **weights**: which files hold them, where a Hugging Face cache may have them, and the key
  layout they were published in (see :mod:`~wsi_pipeline.features.key_layouts`);
- the **pretrained config**: timm's ``pretrained_cfg`` keys (``input_size``, ``interpolation``,
  ``crop_pct``, ``crop_mode``, ``mean``, ``std``), read back through timm's
  ``resolve_data_config``, plus what timm does not know: how a tile's embedding is taken from the
  network's output (:data:`OUTPUT_RULES`), its length, and the µm/px and tile size the model was
  trained at.

Any timm model is an entry too, as ``timm:<name>`` (:func:`timm_entry`), configured from timm's own
pretrained config.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from wsi_pipeline.errors import WSIPipelineError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: How a tile's embedding is read from the network.
#:
#: - ``class_token``: the last layer's (normalised) class token;
#: - ``class_token+mean_patch``: the class token joined with the mean of the patch tokens
#:   (register tokens excluded), twice the width, as the Virchow model cards prescribe;
#: - ``pooled``: what timm's head gives with no classifier (a CNN's global average pool).
OUTPUT_RULES = ("class_token", "class_token+mean_patch", "pooled")

#: Prefix of registry names that stand for any timm model.
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the pipeline must know about one tile encoder.

    Attributes
    ----------
    name
        Registry name, used in workflow presets (``features.encoder``).
    architecture
        timm model name the network is created as.
    model_kwargs
        Keyword arguments for ``timm.create_model`` (``num_classes=0`` is always added).
    pretrained_cfg
        timm ``pretrained_cfg`` entries describing the preprocessing: ``input_size`` (C, H, W),
        ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``.
    output
        One of :data:`OUTPUT_RULES`.
    dim
        Length of the embedding of one tile.
    recommended_mpp, recommended_tile_px
        The resolution (µm/px) and tile side the encoder was trained at (``None``: natural images).
    weights_files
        File names that may hold the checkpoint, in order of preference; empty for encoders that
        need no file (the demo).
    hf_repo
        Hugging Face repository whose local cache may hold one of ``weights_files``.
    key_layout
        The published checkpoint's key layout (a name in ``key_layouts.KEY_LAYOUTS``).
    truncate_after
        For CNNs cut short: the last stage kept (``"layer3"``); later stages are removed.
    random_seed
        For the demo only: the seed of its fixed random weights.
    factory
        For a network timm does not have (a plugin, a benchmark's stand-in): called with the
        architecture arguments instead of ``timm.create_model``; ``architecture`` then only names it.
    is_demo
        True for encoders with no pathology training; every output names them as demos.
    description
        One line for listings and reports.
    """

    name: str
    architecture: str
    dim: int
    pretrained_cfg: dict[str, Any]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    output: str = "class_token"
    recommended_mpp: float | None = 0.5
    recommended_tile_px: int = 224
    weights_files: tuple[str, ...] = ()
    hf_repo: str | None = None
    key_layout: str = "timm"
    truncate_after: str | None = None
    random_seed: int | None = None
    factory: Callable[..., Any] | None = None
    is_demo: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_RULES:
            raise ValueError(f"encoder '{self.name}': output rule {self.output!r} is not one of {OUTPUT_RULES}")
        if not self.weights_files and self.random_seed is None:
            raise ValueError(f"encoder '{self.name}' names no weights file and is not a seeded demo")

    @property
    def needs_weights(self) -> bool:
        """Whether a checkpoint file must be found (every entry but the demo)."""
        return bool(self.weights_files)

    def data_config(self) -> dict[str, Any]:
        """The preprocessing, resolved by timm from this entry's ``pretrained_cfg``.

        Returns ``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct`` and
        ``crop_mode`` exactly as timm's ``resolve_data_config`` gives them to its own transforms.
        """
        from timm.data import resolve_data_config

        config = resolve_data_config({}, pretrained_cfg=dict(self.pretrained_cfg), use_test_size=True)
        return {
            "input_size": tuple(int(v) for v in config["input_size"]),
            "interpolation": str(config["interpolation"]),
            "mean": tuple(float(v) for v in config["mean"]),
            "std": tuple(float(v) for v in config["std"]),
            "crop_pct": float(config["crop_pct"]),
            "crop_mode": str(config.get("crop_mode", "center")),
        }

    @property
    def input_px(self) -> int:
        """Side of the square image the network takes."""
        return int(self.pretrained_cfg["input_size"][-1])

    def card(self) -> dict[str, Any]:
        """Plain data for listings (``wsi-pipeline models``) and provenance."""
        data = self.data_config()
        return {
            "name": self.name,
            "dim": self.dim,
            "architecture": self.architecture,
            "input_size": list(data["input_size"][1:]),
            "interpolation": data["interpolation"],
            "crop_pct": data["crop_pct"],
            "mean": list(data["mean"]),
            "std": list(data["std"]),
            "output": self.output,
            "recommended_mpp": self.recommended_mpp,
            "recommended_tile_px": self.recommended_tile_px,
            "weights_files": list(self.weights_files),
            "hf_repo": self.hf_repo,
            "key_layout": self.key_layout,
            "is_demo": self.is_demo,
            "description": self.description,
        }


def vit_cfg(size: int = 224, interpolation: str = "bilinear", crop_pct: float = 1.0,
            mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD) -> dict[str, Any]:
    """A ``pretrained_cfg`` with the keys the preprocessing reads."""
    return {"input_size": (3, size, size), "interpolation": interpolation, "crop_pct": crop_pct, "crop_mode": "center",
            "mean": mean, "std": std, "num_classes": 0}


ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder to the registry (a name may be registered once)."""
    if spec.name in ENCODERS:
        raise ValueError(f"encoder '{spec.name}' is already registered")
    ENCODERS[spec.name] = spec
    return spec


@lru_cache(maxsize=32)
def timm_entry(name: str) -> EncoderSpec:
    """An entry for any timm model, ``timm:<model>[.<tag>]``, configured from timm's pretrained config.

    Cached: the client, the dry run and every extraction task ask for it, and it builds the
    network (on the meta device) to learn its width.

    Its weights are the ones timm publishes on the Hugging Face hub (``hf_hub_id``), found in
    the local cache or given as ``features.weights``; the embedding is timm's pooled output.

    Raises
    ------
    WSIPipelineError
        When timm knows no such model.
    """
    import timm
    from timm.models import get_pretrained_cfg

    model_name = name.removeprefix(TIMM_PREFIX)
    architecture = model_name.split(".")[0]
    if not timm.is_model(architecture):
        close = timm.list_models(f"*{architecture[:6]}*")[:8]
        raise WSIPipelineError(
            f"timm has no model '{architecture}'",
            where="field 'features.encoder'",
            fix=f"use timm:<a name from timm.list_models()>{', e.g. ' + ', '.join('timm:' + c for c in close) if close else ''}",
        )
    cfg = get_pretrained_cfg(model_name, allow_unregistered=True)
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    keep = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "test_input_size", "test_crop_pct")
    pretrained_cfg = {k: cfg_dict[k] for k in keep if cfg_dict.get(k) is not None}
    pretrained_cfg.setdefault("input_size", (3, 224, 224))
    with_tag = model_name if "." in model_name else f"{model_name}.{cfg.tag}" if cfg is not None and cfg.tag else model_name
    # The embedding width is only known once the network exists; building on the meta device is free.
    import torch

    with torch.device("meta"):
        width = int(timm.create_model(model_name, pretrained=False, num_classes=0).num_features)
    return EncoderSpec(
        name=name,
        architecture=model_name,
        dim=width,
        pretrained_cfg=pretrained_cfg,
        output="pooled",
        recommended_mpp=None,
        recommended_tile_px=int(pretrained_cfg["input_size"][-1]),
        weights_files=("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"),
        hf_repo=cfg_dict.get("hf_hub_id") or f"timm/{with_tag}",
        key_layout="timm",
        description=f"timm model {model_name} (natural-image weights unless the checkpoint says otherwise)",
    )


def get_encoder_spec(name: str) -> EncoderSpec:
    """Return the registered encoder ``name`` (or a ``timm:<model>`` entry), with an error listing the known ones."""
    # The built-in encoders register themselves on import.
    from wsi_pipeline.features import encoders  # noqa: F401

    if name.startswith(TIMM_PREFIX):
        return timm_entry(name)
    try:
        return ENCODERS[name]
    except KeyError:
        from difflib import get_close_matches

        close = get_close_matches(name, ENCODERS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise WSIPipelineError(
            f"unknown encoder '{name}'",
            where="field 'features.encoder'",
            fix=f"{hint}use one of: {', '.join(sorted(ENCODERS))}, or timm:<any timm model> (see `wsi-pipeline models`)",
        ) from None


def encoder_slug(name: str) -> str:
    """An encoder name safe in a store path (``timm:resnet50.a1_in1k`` → ``timm_resnet50.a1_in1k``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def layer_norm(eps: float) -> partial:
    """A LayerNorm with another epsilon (transformers' ViT uses 1e-12 where timm uses 1e-6)."""
    from torch import nn

    return partial(nn.LayerNorm, eps=eps)
