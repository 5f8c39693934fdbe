"""The tile-source protocol: what every stage may ask of an image, whatever reads it.

Stages (tiling, extraction, QC, the CLI) hold a :class:`TileSource`, never a concrete reader,
so a faster decoder or another modality plugs in behind the same five questions: how big is a
pixel, how is the pyramid laid out, what does the whole image look like at a coarse scale, and
what are the pixels of these tiles.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import numpy as np

from wsi_pipeline.errors import WSIPipelineError


@dataclass(frozen=True)
class ReadOptions:
    """How a source reads tiles: a source that has no choice to make ignores what it cannot use.

    Attributes
    ----------
    reader
        ``'auto'``: the fastest path the file allows (compressed JPEG tiles read and decoded in
        batches, checked against the reference decoder on the slide's first tiles);
        ``'openslide'``: always the reference reader.
    workers
        Reader threads: regions are read and decoded by this many threads at once.
    scaled_decode
        Let JPEG decoding shrink by 2, 4 or 8 in the DCT domain when a tile is shrunk that much.
    decoder
        ``'cpu'``, ``'gpu'`` or ``'auto'`` (the GPU when ``device`` is CUDA and a GPU decoder is
        installed); only the raw-JPEG path decodes on the GPU.
    device
        The device batches are meant for (``'cpu'``, ``'cuda:0'``...): batches come back as torch
        tensors on that device when decoding happens there.
    """

    reader: str = "auto"
    workers: int = 2
    scaled_decode: bool = True
    decoder: str = "cpu"
    device: str = "cpu"


@runtime_checkable
class TileSource(Protocol):
    """An open image with a pyramid of levels, read by level-0 pixel coordinates.

    Attributes
    ----------
    path
        The file (or the main file of a multi-file slide) the source was opened from.
    mpp
        Level-0 µm/px in use: the override given when opening, else the metadata, else ``None``.
    metadata_mpp
        Level-0 µm/px as the file states it (``None`` when unknown), whatever the override.
    vendor
        Format name (OpenSlide's ``openslide.vendor``: ``aperio``, ``generic-tiff``, ``dicom``...).
    objective_power
        Scanning objective magnification, ``None`` when unknown.
    dimensions
        Level-0 (width, height) in pixels.
    level_dimensions, level_downsamples
        (width, height) and downsample factor (relative to level 0) of every pyramid level.
    properties
        Format metadata as strings.
    uid
        Content fingerprint of the file(s): the same slide under another path has the same uid.
    """

    path: Path

    @property
    def mpp(self) -> float | None: ...

    @property
    def metadata_mpp(self) -> float | None: ...

    @property
    def vendor(self) -> str: ...

    @property
    def objective_power(self) -> float | None: ...

    @property
    def dimensions(self) -> tuple[int, int]: ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def properties(self) -> Mapping[str, str]: ...

    @property
    def uid(self) -> str: ...

    def thumbnail(self, mpp: float) -> tuple[np.ndarray, float]:
        """Return an (H, W, 3) uint8 RGB picture of the whole image at about ``mpp`` µm/px.

        Never coarser than asked and never finer than level 0. The second value is the exact
        number of level-0 pixels per thumbnail pixel (width-wise). Memory is bounded by the
        thumbnail's size, not the slide's: a pyramid without a coarse level is streamed.
        """
        ...

    def read_tiles(
        self, coords: np.ndarray, size_level0: float, tile_px: int, batch_size: int
    ) -> Iterator[np.ndarray]:
        """Yield the tiles at ``coords`` in order, as (B, tile_px, tile_px, 3) uint8 batches.

        ``coords`` are (N, 2) level-0 top-left (x, y); each tile spans ``size_level0`` level-0
        pixels and comes out ``tile_px`` wide, read from the coarsest level at least as fine as
        needed and resampled with an antialiasing filter. Areas outside the image are glass
        (white). Every batch holds ``batch_size`` tiles but the last. Batches are numpy arrays,
        or uint8 torch tensors on ``ReadOptions.device`` when the source decodes there.
        """
        ...

    def close(self) -> None:
        """Release the file handles."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None: ...


#: What a user is told when a slide has no µm/px, by where the run came from.
MPP_FIX_COHORT = "set this slide's level-0 µm/px in the cohort table's 'mpp' column"


def require_mpp(source: TileSource, fix: str = MPP_FIX_COHORT) -> float:
    """Return the source's level-0 µm/px, or raise an error naming the slide and how to set it.

    Parameters
    ----------
    source
        An open source.
    fix
        How the user supplies µm/px where the call came from (a cohort column, a CLI option).

    Raises
    ------
    WSIPipelineError
        When neither the metadata nor an override gives µm/px.
    """
    if source.mpp is None:
        raise WSIPipelineError(
            "the slide has no µm/px (microns per pixel) in its metadata, so its physical scale is unknown "
            "and tiles at a physical resolution cannot be placed",
            where=str(source.path),
            fix=fix,
        )
    return source.mpp


#: A level counts as "fine enough" when its downsample exceeds the wanted one by at most this
#: fraction: reading 0.499 µm/px pixels for a 0.5 µm/px tile is fine, upsampling is not.
LEVEL_TOLERANCE = 0.02


def level_for_downsample(
    level_downsamples: tuple[float, ...], downsample: float, tolerance: float = LEVEL_TOLERANCE
) -> int:
    """Return the coarsest level still at least as fine as ``downsample``.

    Parameters
    ----------
    level_downsamples
        Downsample of each level relative to level 0, finest first.
    downsample
        Level-0 pixels per output pixel wanted.
    tolerance
        A level counts as fine enough when its downsample exceeds the wanted one by at most
        this fraction (reading 0.499 µm/px pixels for a 0.5 µm/px tile is fine, upsampling a
        coarser level is not).

    Returns
    -------
    int
        The level index; 0 when no reduced level is fine enough.
    """
    best = 0
    for level, level_downsample in enumerate(level_downsamples):
        if level_downsample <= downsample * (1 + tolerance):
            best = level
    return best


#: An override further than this from the metadata is worth a warning: one of them is wrong.
MPP_DISAGREEMENT = 0.10


def mpp_disagreement(source: TileSource, threshold: float = MPP_DISAGREEMENT) -> str | None:
    """Return a warning when the µm/px in use differs from the metadata by more than ``threshold``.

    Returns
    -------
    str or None
        The warning (naming the slide and both values), or None when they agree or there is
        nothing to compare.
    """
    used, stated = source.mpp, source.metadata_mpp
    if used is None or stated is None or abs(used - stated) <= threshold * stated:
        return None
    return (
        f"{source.path}: the µm/px in use ({used:g}, from the cohort's 'mpp' column) differs from the slide's "
        f"metadata ({stated:g}) by {abs(used - stated) / stated:.0%}; check which is right"
    )
