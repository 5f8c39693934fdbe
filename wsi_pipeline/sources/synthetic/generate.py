"""Render a synthetic slide and write it to disk atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.errors import WSIPipelineError

from . import tiff
from .slide import render_slide
from .spec import SlideTruth, SyntheticSlideSpec


def generate_slide(spec: SyntheticSlideSpec, path: str | os.PathLike[str]) -> SlideTruth:
    """Render ``spec`` and write it as a pyramidal TIFF at ``path``.

    The file appears under its final name only once complete (written to a hidden temporary
    name in the same folder, then renamed), so a killed or failed run never leaves a half-written
    slide that looks finished. Parent folders are created.

    Parameters
    ----------
    spec
        The slide to make.
    path
        Output ``.tiff`` path; an existing file is replaced.

    Returns
    -------
    SlideTruth
        The ground truth of the written slide.

    Raises
    ------
    WSIPipelineError
        If the file cannot be written (folder not writable, disk full).
    """
    rgb, truth = render_slide(spec)
    write_rendered_slide(path, rgb, spec.mpp, spec.n_levels)
    return truth


def write_rendered_slide(path: str | os.PathLike[str], rgb: np.ndarray, mpp: float, n_levels: int) -> None:
    """Write rendered level-0 pixels as a pyramidal TIFF that appears under ``path`` only once complete.

    Raises
    ------
    WSIPipelineError
        If the file cannot be written (folder not writable, disk full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Look the writer up on the module at call time, so it can be swapped (tests, tracing).
        with atomic_path(path) as tmp:
            tiff.write_pyramidal_tiff(tmp, rgb, mpp, n_levels)
    except OSError as exc:
        raise WSIPipelineError(
            f"cannot write the synthetic slide ({exc.strerror or exc})",
            where=str(path),
            fix="choose an output folder that exists, is writable and has free space",
        ) from exc
