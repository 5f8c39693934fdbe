"""Finding and loading encoder weights offline: a local file or an existing Hugging Face cache."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from wsi_pipeline.errors import WSIPipelineError

#: Folder searched for ``<encoder name>/<weights file>`` when no path is given.
WEIGHTS_HOME_ENV = "WSI_PIPELINE_WEIGHTS"


def default_weights_home() -> Path:
    """Return ``$WSI_PIPELINE_WEIGHTS`` or ``~/.cache/wsi-pipeline/weights``."""
    return Path(os.environ.get(WEIGHTS_HOME_ENV, Path.home() / ".cache" / "wsi-pipeline" / "weights"))


def _hf_cached_file(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # huggingface_hub comes with timm, but the cache lookup is optional
        return None
    found = try_to_load_from_cache(repo_id=repo, filename=filename)
    return Path(found) if isinstance(found, str) else None


def resolve_weights(name: str, weights_file: str, hf_repo: str | None, explicit: str | Path | None) -> Path:
    """Find an encoder's checkpoint without downloading anything.

    Looks at, in order: the explicit path (``features.weights``), then
    ``$WSI_PIPELINE_WEIGHTS/<name>/<weights_file>``, then the Hugging Face cache of ``hf_repo``.

    Raises
    ------
    WSIPipelineError
        Naming every place looked at and how to put the file there.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise WSIPipelineError(
            f"weights file for encoder '{name}' not found: {path}",
            where="field 'features.weights'",
            fix="give the path of an existing checkpoint file",
        )
    local = default_weights_home() / name / weights_file
    if local.is_file():
        return local
    cached = _hf_cached_file(hf_repo, weights_file) if hf_repo else None
    if cached is not None and cached.is_file():
        return cached
    looked = [str(local)] + ([f"Hugging Face cache of {hf_repo}"] if hf_repo else [])
    raise WSIPipelineError(
        f"no local weights for encoder '{name}' (looked in: {'; '.join(looked)}); weights are never downloaded at run time",
        where="field 'features.weights'",
        fix=f"put {weights_file} at {local}, or set features.weights to its path"
        + (f", or download {hf_repo} into the Hugging Face cache beforehand" if hf_repo else ""),
    )


@lru_cache(maxsize=16)
def state_dict_sha256(module: nn.Module) -> str:
    """Return a SHA-256 over a module's parameters and buffers, in key order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(model: nn.Module, path: Path, name: str) -> nn.Module:
    """Load a state dict into ``model`` strictly, with a clear error on a layout mismatch.

    Only tensors are unpickled (``weights_only=True``): a checkpoint never runs code.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable checkpoint is the user's file to fix
        raise WSIPipelineError(
            f"cannot read the checkpoint of encoder '{name}': {error}",
            where=str(path),
            fix="check the file is a complete PyTorch or safetensors checkpoint",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    # assign=True adopts the checkpoint's tensors, so models built on the meta device work too.
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise WSIPipelineError(
            f"checkpoint does not match the '{name}' architecture: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})",
            where=str(path),
            fix=f"use the official '{name}' checkpoint, or pick the encoder this file belongs to",
        )
    still_meta = [key for key, tensor in model.state_dict().items() if tensor.is_meta]
    if still_meta:
        raise WSIPipelineError(
            f"checkpoint left tensors of the '{name}' architecture unset: {still_meta[:3]}",
            where=str(path),
            fix=f"use the official '{name}' checkpoint",
        )
    return model
