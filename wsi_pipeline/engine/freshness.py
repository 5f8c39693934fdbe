"""Whole-stage caching for the run folder: redo train/score only when their inputs changed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import wsi_pipeline
from wsi_pipeline.engine.record import write_json_atomic
from wsi_pipeline.store.keys import short_hash


def stage_key(inputs: dict[str, Any]) -> str:
    """Hash everything a stage's outputs depend on, the package version included."""
    return short_hash({**inputs, "package_version": wsi_pipeline.__version__}, length=32)


def _marker(output_dir: Path, stage: str) -> Path:
    return output_dir / ".stages" / f"{stage}.json"


def is_fresh(output_dir: Path, stage: str, key: str, outputs: Iterable[Path]) -> bool:
    """True when the stage last completed with the same key and its outputs still exist."""
    marker = _marker(output_dir, stage)
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return False
    return recorded == key and all(Path(p).is_file() for p in outputs)


def mark_fresh(output_dir: Path, stage: str, key: str) -> None:
    """Record that the stage completed for ``key`` (written after its outputs)."""
    write_json_atomic(_marker(output_dir, stage), {"key": key})
