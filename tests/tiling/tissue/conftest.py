"""Shared fixtures of the tissue-segmentation tests: sources over arrays and over synthetic TIFFs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wsi_pipeline.config.workflow import TissueConfig
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import (
    ArtefactTruth,
    render_artefact_slide,
    write_pyramidal_tiff,
)
from wsi_pipeline.tiling.tissue import TissueMap, segment_tissue

#: The artefact slide of these tests: 6 x 4 mm at 3 µm/px, segmented at 6 µm/px (1024 px wide).
ARTEFACT_SIZE = (2048, 1366)
ARTEFACT_MPP = 3.0
ARTEFACT_SEED = 0


class ArraySource:
    """The part of a TileSource tissue methods use, over an in-memory RGB array."""

    def __init__(self, rgb: np.ndarray, mpp: float, path: str = "in-memory.tiff") -> None:
        self.rgb = rgb
        self.mpp = mpp
        self.path = Path(path)
        self.thumbnail_calls: list[float] = []

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    def thumbnail(self, mpp: float) -> tuple[np.ndarray, float]:
        """Area-average to about ``mpp`` µm/px (never finer than level 0), like a real source."""
        self.thumbnail_calls.append(mpp)
        width, height = self.dimensions
        factor = max(1.0, mpp / self.mpp)
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        image = Image.fromarray(self.rgb).resize(size, Image.Resampling.BOX)
        return np.asarray(image), width / size[0]


def truth_on(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A level-0 truth mask on a thumbnail grid: True where it covers at least half a pixel."""
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(image) >= 128


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two bool masks."""
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


@pytest.fixture(scope="session")
def array_source() -> type[ArraySource]:
    return ArraySource


@pytest.fixture(scope="session")
def on_grid() -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    return truth_on


@pytest.fixture(scope="session")
def dice_of() -> Callable[[np.ndarray, np.ndarray], float]:
    return dice


@pytest.fixture(scope="session")
def artefact_slide() -> tuple[np.ndarray, ArtefactTruth]:
    """The rendered artefact slide (level 0) and its truth; rendered once per session."""
    width, height = ARTEFACT_SIZE
    return render_artefact_slide(width, height, ARTEFACT_MPP, ARTEFACT_SEED)


@pytest.fixture(scope="session")
def artefact_tiff(artefact_slide, tmp_path_factory) -> Path:
    """The artefact slide written as a JPEG pyramidal TIFF, as the pipeline would read it."""
    path = tmp_path_factory.mktemp("artefact") / "artefacts.tiff"
    write_pyramidal_tiff(path, artefact_slide[0], ARTEFACT_MPP, n_levels=4)
    return path


@pytest.fixture()
def artefact_source(artefact_tiff):
    """The artefact TIFF opened through the source registry (OpenSlide)."""
    with open_source("wsi", artefact_tiff) as source:
        yield source


@pytest.fixture(scope="session")
def artefact_segmented(artefact_tiff, artefact_slide) -> tuple[TissueMap, dict[str, np.ndarray]]:
    """The default (``auto``) method on the artefact TIFF, and the truth on its mask grid.

    The grid truth holds ``tissue``, ``border``, ``pale``, ``ihc``, ``debris``, ``ink_<colour>``,
    ``pen`` (all ink) and ``near_pen`` (ink grown by 2 px: the pen mask is grown on purpose,
    since ink edges blend into tissue, so tissue recall is judged away from that rim).
    """
    with open_source("wsi", artefact_tiff) as source:
        result = segment_tissue(source, TissueConfig())
    _, truth = artefact_slide
    shape = result.tissue.shape
    grid = {name: truth_on(getattr(truth, name), shape) for name in ("tissue", "border", "pale", "ihc", "debris")}
    grid.update({f"ink_{colour}": truth_on(mask, shape) for colour, mask in truth.ink.items()})
    grid["pen"] = grid["ink_blue"] | grid["ink_green"] | grid["ink_black"]
    grid["near_pen"] = ndimage.binary_dilation(grid["pen"], iterations=2)
    return result, grid
