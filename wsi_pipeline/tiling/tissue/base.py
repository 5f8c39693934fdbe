"""What a tissue method returns, and the registry that finds a method by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import TileSource


@dataclass(frozen=True)
class TissueMap:
    """Masks of a whole slide at thumbnail scale.

    Attributes
    ----------
    tissue
        (H, W) bool, True on tissue (pen ink, borders and background excluded).
    pen
        (H, W) bool, True on pen ink (all False when the method does not look for pen).
    scale
        Level-0 pixels per mask pixel.
    mpp
        µm per mask pixel.
    modality
        ``"brightfield"`` or ``"fluorescence"``: how the image was read.
    """

    tissue: np.ndarray
    pen: np.ndarray
    scale: float
    mpp: float
    modality: str


#: ``method(source, config) -> TissueMap``; ``source.mpp`` is known when a method is called.
TissueMethod = Callable[[TileSource, TissueConfig], TissueMap]

_METHODS: dict[str, TissueMethod] = {}


def register_tissue_method(name: str) -> Callable[[TissueMethod], TissueMethod]:
    """Decorator registering a tissue method under ``name``."""

    def register(method: TissueMethod) -> TissueMethod:
        _METHODS[name] = method
        return method

    return register


def tissue_method_names() -> list[str]:
    """Names of every registered tissue method."""
    return sorted(_METHODS)


def _closest(name: str, names: list[str]) -> str | None:
    """The registered name a typo most likely meant: a name it abbreviates, else the most similar."""
    key = name.strip().lower()
    # difflib scores a short prefix ('otsu' for 'otsu_saturation') below its cutoff.
    partial = [candidate for candidate in names if key and key in candidate.lower()]
    if partial:
        return min(partial, key=len)
    close = difflib.get_close_matches(key, names, n=1)
    return close[0] if close else None


def get_tissue_method(name: str) -> TissueMethod:
    """Return the tissue method registered as ``name``.

    Raises
    ------
    WSIPipelineError
        Naming the field ``tiling.tissue.method`` and the closest registered names.
    """
    if name not in _METHODS:
        close = _closest(name, tissue_method_names())
        hint = f" Did you mean '{close}'?" if close else ""
        raise WSIPipelineError(
            f"unknown tissue method '{name}'.{hint}",
            where="tiling.tissue.method",
            fix=f"use one of: {', '.join(tissue_method_names())}",
        )
    return _METHODS[name]


def segment_tissue(source: TileSource, config: TissueConfig) -> TissueMap:
    """Segment a slide with the method ``config.method`` names.

    Parameters
    ----------
    source
        An open source whose ``mpp`` is known.
    config
        The tissue settings (method, thumbnail µm/px, size limits, pen removal, model).

    Returns
    -------
    TissueMap
        The masks at thumbnail scale.

    Raises
    ------
    WSIPipelineError
        When no method has that name.
    """
    return get_tissue_method(config.method)(source, config)
