"""Finding and loading encoder weights offline: a local file or an existing Hugging Face cache."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features.registry import EncoderSpec, encoder_slug

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


def _download(repo: str, filenames: tuple[str, ...]) -> Path | None:
    """Fetch the first of ``filenames`` that ``repo`` has, into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename))
        except EntryNotFoundError:
            continue
    return None


def resolve_weights(spec: EncoderSpec, explicit: str | Path | None, allow_download: bool = False) -> Path:
    """Find an encoder's checkpoint; nothing is downloaded unless ``allow_download``.

    Looks at, in order: the explicit path (``features.weights``), then
    ``$WSI_PIPELINE_WEIGHTS/<name>/<file>`` for each of the entry's file names, then the Hugging
    Face cache of its repository; with ``allow_download`` (``features.allow_download``), the
    repository itself last.

    Raises
    ------
    WSIPipelineError
        Naming every place looked at and how to put the file there.
    """
    name = spec.name
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise WSIPipelineError(
            f"weights file for encoder '{name}' not found: {path}",
            where="field 'features.weights'",
            fix="give the path of an existing checkpoint file",
        )
    folder = default_weights_home() / encoder_slug(name)
    for filename in spec.weights_files:
        if (folder / filename).is_file():
            return folder / filename
    if spec.hf_repo:
        for filename in spec.weights_files:
            cached = _hf_cached_file(spec.hf_repo, filename)
            if cached is not None and cached.is_file():
                return cached
        if allow_download:
            fetched = _download(spec.hf_repo, spec.weights_files)
            if fetched is not None:
                return fetched
    files = " or ".join(spec.weights_files)
    looked = [str(folder / f) for f in spec.weights_files] + ([f"Hugging Face cache of {spec.hf_repo}"] if spec.hf_repo else [])
    raise WSIPipelineError(
        f"no local weights for encoder '{name}' (looked in: {'; '.join(looked)}); weights are never downloaded "
        "unless features.allow_download is true",
        where="field 'features.weights'",
        fix=f"put {files} in {folder}, or set features.weights to its path"
        + (f", or download {spec.hf_repo} into the Hugging Face cache beforehand (or set features.allow_download: true)" if spec.hf_repo else ""),
    )


def weights_found(spec: EncoderSpec) -> str | None:
    """Where an entry's weights are (``None``: not on this machine); never downloads."""
    if not spec.needs_weights:
        return "none needed"
    try:
        return str(resolve_weights(spec, None))
    except WSIPipelineError:
        return None


@lru_cache(maxsize=16)
def state_dict_sha256(module: nn.Module) -> str:
    """Return a SHA-256 over a module's parameters and buffers, in key order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors: safetensors, or a PyTorch file unpickled with ``weights_only=True``.

    A checkpoint never runs code. A training checkpoint's ``state_dict``/``model`` entry is taken
    when the file wraps one.

    Raises
    ------
    WSIPipelineError
        When the file is not a readable checkpoint.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is the user's file to fix
        raise WSIPipelineError(
            f"cannot read the checkpoint of encoder '{name}': {error}",
            where=str(path),
            fix="check the file is a complete PyTorch or safetensors checkpoint",
        ) from None
    for wrapper in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WSIPipelineError(
            f"the checkpoint of encoder '{name}' is not a state dict of tensors",
            where=str(path),
            fix="give the model's weights file (a state dict), not a whole pickled model or training state",
        )
    return state
