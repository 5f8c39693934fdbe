"""Huge synthetic slides (up to ~10^5 px a side) written tile by tile in bounded memory.

`render_slide` builds the whole level 0 in memory, which caps it at a few thousand pixels a side;
a 150,000 x 100,000 slide would need 45 GB of RGB. `write_large_slide` never holds more than a
few tiles: every tile of every pyramid level is generated procedurally *at that level's
resolution*, JPEG-encoded and handed to tifffile through a generator, so writing level k costs
the pixels of level k only.

The content is deliberately cheap:

- **layout**: a smooth scalar field on a coarse grid (one cell = `CELL_PX` level-0 pixels) made of
  a few elliptical blobs with wavy outlines; tissue is where the field exceeds the threshold that
  leaves ``tissue_fraction`` of the cells above it. Its cell-centre mask is the returned truth.
  Pixels are tissue where the bilinearly interpolated field exceeds the threshold, so the outline is
  smooth and identical (up to sampling) at every level;
- **tissue texture**: a small bank of `PATCH_PX`-square H&E patches (stroma with collagen fibres,
  tumour nests, fibroblasts, lymphocytes; same physical scale as `render_slide`), tiled over the
  slide with a random patch (each with its own stain strength) and one of the 8 flips/transposes
  per patch cell. Level k tiles the 2^k box-downsampled bank the same way, so a reduced level equals the box-downsampled
  level 0 away from the tissue outline;
- **glass**: about (240, 240, 240) with slight noise; one glass tile, encoded once and its bytes
  reused for every all-glass tile (tifffile accepts pre-encoded tiles).

The TIFF layout is the one of `tiff.write_pyramidal_tiff` (reduced levels ``subfiletype=1``,
photometric RGB stored as YCbCr 4:2:0 JPEG, resolution in px/cm), which OpenSlide's generic-TIFF
reader opens and for which it reports ``openslide.mpp-x``. The same arguments always give the
same bytes.

Options bring it closer to what Aperio scanners write (see `aperio`): ``level_downsample=4``
writes pages at 1x, 4x, 16x... (a 40x scan has no 20x level, so 20x tiles are read from 40x);
``jpeg_colour='rgb'`` stores RGB-coded JPEG under TIFF photometric RGB with the tables in a shared
JPEGTables tag and no colour marker in the tiles; ``aperio_description=True`` adds the Aperio
ImageDescription (OpenSlide then reports vendor ``aperio``) and a thumbnail page after level 0.
`write_aperio_like_slide` combines the three.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from wsi_pipeline.atomic import atomic_path

from .aperio import (
    encode_rgb_coded_jpeg,
    level0_description,
    reduced_description,
    split_aperio_tile,
    thumbnail_description,
)
from .fields import resize_bilinear, smooth_noise
from .nuclei import (
    FIBROBLAST,
    LYMPHOCYTE,
    TUMOUR,
    make_stamp_bank,
    sample_centres,
    stamp_nuclei,
)
from .slide import (
    DENSITY_FIBROBLAST,
    DENSITY_TUMOUR,
    EOSIN_NEST,
    EOSIN_STROMA,
    FIBRE_STROMA,
    TEXTURE_UM,
)
from .stain import compose_rgb
from .tiff import SOFTWARE, downsample_2x, level_page_options

#: Level-0 pixels per cell of the layout grid (and of the truth mask).
CELL_PX = 64
#: Side of one texture patch at level 0; a power of two, so that every 2x level down to
#: ``log2(PATCH_PX)`` tiles whole downsampled patches.
PATCH_PX = 1024
#: Patches rendered per slide (each then appears in 8 orientations).
N_PATCHES = 8
#: Range of the stain strength of a patch (both stains scaled by one factor drawn per patch).
STAIN_STRENGTH = (0.8, 1.2)
#: Glass grey level and the half-range of its uniform noise.
GLASS_LEVEL = 240
GLASS_NOISE = 2
#: The default pyramid stops at the first level whose longer side is at most this.
SMALLEST_LEVEL_PX = 2000
#: Lymphocytes per µm² everywhere in tissue (stain, texture and other densities are `slide.py`'s).
DENSITY_LYMPHOCYTE = 1 / 1500
#: Nests cover about this fraction of a patch.
NEST_FRACTION = 0.35
#: Longer side of the thumbnail page of an Aperio-style slide is at most this.
THUMBNAIL_PX = 1024
#: Pages of `write_aperio_like_slide` at most (1x, 4x, 16x).
APERIO_LEVELS = 3
#: Ratios between written pyramid levels that `write_large_slide` supports.
LEVEL_DOWNSAMPLES = (2, 4)
#: JPEG colour codings: ``ycbcr`` (YCbCr 4:2:0, photometric YCbCr) or ``rgb`` (Aperio's).
JPEG_COLOURS = ("ycbcr", "rgb")


@dataclass(frozen=True)
class LargeSlideTruth:
    """What `write_large_slide` wrote.

    Cell ``(i, j)`` of ``tissue_mask`` covers level-0 pixels ``[i*c, (i+1)*c) x [j*c, (j+1)*c)``
    with ``c = cell_px``; the last row/column may be cut by the slide border.

    Attributes
    ----------
    tissue_mask
        Boolean (ceil(height / cell_px), ceil(width / cell_px)); ``True`` where the cell centre is
        tissue.
    cell_px
        Level-0 pixels per mask cell.
    tissue_fraction
        Tissue area over slide area, from the mask (border cells weighted by their area inside).
    width, height
        Level-0 size in pixels.
    mpp
        Level-0 µm per pixel (written to the resolution tags).
    level_dimensions
        ``(width, height)`` of every level, level 0 first; level k is
        ``ceil(size / level_downsample**k)``.
    level_downsample
        Ratio between consecutive levels (2, or 4 for the Aperio 40x layout).
    """

    tissue_mask: np.ndarray
    cell_px: int
    tissue_fraction: float
    width: int
    height: int
    mpp: float
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsample: int = 2

    @property
    def n_levels(self) -> int:
        """Number of pyramid levels written (1 for a flat slide)."""
        return len(self.level_dimensions)

    @property
    def tissue_area_mm2(self) -> float:
        """Tissue area in mm²."""
        return self.tissue_fraction * self.width * self.height * (self.mpp * 1e-3) ** 2


def default_n_levels(width: int, height: int, smallest: int = SMALLEST_LEVEL_PX, factor: int = 2) -> int:
    """Return the number of levels for the longer side of the last one to be at most ``smallest``.

    Parameters
    ----------
    width, height
        Level-0 size in pixels.
    smallest
        Largest acceptable longer side of the last level.
    factor
        Ratio between consecutive levels.

    Returns
    -------
    int
        At least 1.
    """
    n, side = 1, max(width, height)
    while side > smallest:
        side = -(-side // factor)
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Layout


def _tissue_field(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A few elliptical blobs with wavy outlines on the cell grid; larger is more inside a blob.

    Shapes are drawn relative to the slide (pieces on a jittered grid, radii a fraction of the
    piece spacing), so the same seed gives the same picture at any size.
    """
    n_pieces = int(rng.integers(3, 7))
    aspect = cols / rows
    n_cols = max(1, round(math.sqrt(n_pieces * aspect)))
    n_rows = math.ceil(n_pieces / n_cols)
    chosen = rng.choice(n_rows * n_cols, size=n_pieces, replace=False)
    jitter = rng.uniform(-0.15, 0.15, size=(n_pieces, 2))
    cy = (chosen // n_cols + 0.5 + jitter[:, 0]) / n_rows  # fraction of the height
    cx = (chosen % n_cols + 0.5 + jitter[:, 1]) / n_cols
    spacing = min(1.0 / n_rows, 1.0 / n_cols * aspect)  # in units of the height
    semi_major = spacing * rng.uniform(0.35, 0.6, size=n_pieces)
    semi_minor = semi_major * rng.uniform(0.5, 0.9, size=n_pieces)
    angle = rng.uniform(0.0, math.pi, size=n_pieces)

    # Wavy outlines: smooth noise drawn on a small grid (independent of the slide size) and
    # upsampled; filtering a 10^6-cell grid with a wide Gaussian would cost seconds.
    coarse_rows = 48
    coarse_cols = max(1, round(coarse_rows * aspect))
    wobble = smooth_noise(rng, (coarse_rows, coarse_cols), 3.0)
    field = resize_bilinear(wobble, (rows, cols), coarse_rows / rows)
    field *= np.float32(0.12)

    # Cell centres in units of the height.
    y = ((np.arange(rows, dtype=np.float32) + 0.5) / rows)[:, None]
    x = ((np.arange(cols, dtype=np.float32) + 0.5) / rows)[None, :]
    blobs = np.full((rows, cols), -np.inf, dtype=np.float32)
    for k in range(n_pieces):
        c, s = np.float32(math.cos(angle[k])), np.float32(math.sin(angle[k]))
        dy, dx = y - np.float32(cy[k]), x - np.float32(cx[k] * aspect)
        along = (dx * c + dy * s) / np.float32(semi_major[k])
        across = (dy * c - dx * s) / np.float32(semi_minor[k])
        np.maximum(blobs, 1.0 - np.sqrt(along * along + across * across), out=blobs)
    field += blobs
    return field


def _cell_weights(size: int, cell_px: int) -> np.ndarray:
    """Level-0 pixels of each cell along one axis (the last one may be cut by the border)."""
    n = -(-size // cell_px)
    weights = np.full(n, cell_px, dtype=np.float64)
    weights[-1] = size - (n - 1) * cell_px
    return weights


def _threshold_for_fraction(field: np.ndarray, weights: np.ndarray, fraction: float) -> float:
    """The field value above which ``fraction`` of the (area-weighted) cells lie."""
    flat = field.ravel()
    order = np.argsort(flat, kind="stable")[::-1]
    area = np.cumsum(weights.ravel()[order])
    k = int(np.searchsorted(area, fraction * area[-1]))
    k = min(max(k, 0), flat.size - 1)
    above = flat[order[k]]
    below = flat[order[k + 1]] if k + 1 < flat.size else above - 1.0
    return float((above + below) / 2)  # strictly between the last cell kept and the first dropped


# ---------------------------------------------------------------------------------------------
# Texture


def _ridges(field: np.ndarray, width: float = 0.35) -> np.ndarray:
    """1 on the zero level set of a unit-variance field, falling to 0 within about ``width``."""
    return np.exp(-np.square(field / np.float32(width)))


def render_patch(rng: np.random.Generator, size: int, mpp: float, strength: float = 1.0) -> np.ndarray:
    """Render one all-tissue H&E patch: stroma with collagen fibres, tumour nests, nuclei.

    Uses the nuclei and stain models of `render_slide`, so nuclei have the same physical size.

    Parameters
    ----------
    rng
        Source of randomness.
    size
        Side in pixels.
    mpp
        µm per pixel.
    strength
        Factor on both stain concentrations (staining varies from section to section).

    Returns
    -------
    numpy.ndarray
        uint8 (size, size, 3).
    """
    texture_um = max(TEXTURE_UM, mpp)
    grid = math.ceil(size * mpp / texture_um)
    shape = (grid, grid)
    nest_field = smooth_noise(rng, shape, max(1.0, 25.0 / texture_um))
    nest = nest_field > np.quantile(nest_field, 1.0 - NEST_FRACTION)
    level = np.where(nest, EOSIN_NEST, EOSIN_STROMA).astype(np.float32)
    level *= 1.0 + 0.08 * smooth_noise(rng, shape, max(1.0, 60.0 / texture_um))
    amplitude = np.where(nest, 0.15 * FIBRE_STROMA, FIBRE_STROMA).astype(np.float32)
    along, across = 14.0 / texture_um, 4.0 / texture_um
    horizontal = _ridges(smooth_noise(rng, shape, (across, along)))
    vertical = _ridges(smooth_noise(rng, shape, (along, across)))
    blend = 1.0 / (1.0 + np.exp(-3.0 * smooth_noise(rng, shape, max(1.0, 40.0 / texture_um))))
    fibres = vertical + (horizontal - vertical) * blend
    eosin_grid = level * (1.0 - amplitude + 2.0 * amplitude * fibres)
    eosin = resize_bilinear(eosin_grid, (size, size), mpp / texture_um)
    eosin *= np.float32(strength)

    # Nuclei: expected counts per 16-px cell from the nest mask.
    cell = 16
    n_cells = -(-size // cell)
    nest_cells = resize_bilinear(nest.astype(np.float32), (n_cells, n_cells), cell * mpp / texture_um) > 0.5
    cell_um2 = (cell * mpp) ** 2
    populations = [
        (TUMOUR, nest_cells * (DENSITY_TUMOUR * cell_um2)),
        (FIBROBLAST, ~nest_cells * (DENSITY_FIBROBLAST * cell_um2)),
        (LYMPHOCYTE, np.full((n_cells, n_cells), DENSITY_LYMPHOCYTE * cell_um2)),
    ]
    haematoxylin = np.zeros((size, size), dtype=np.float32)
    for kind, expected in populations:
        bank = make_stamp_bank(rng, kind, mpp)
        y, x = sample_centres(rng, expected, cell, size, size)
        stamp_nuclei(haematoxylin, rng, bank, y, x, kind.intensity)
    haematoxylin *= np.float32(strength)
    noise = np.frombuffer(rng.bytes(size * size), dtype=np.uint8).reshape(size, size)
    rgb = np.empty((size, size, 3), dtype=np.uint8)
    compose_rgb(haematoxylin, eosin, noise, rgb)
    return rgb


# ---------------------------------------------------------------------------------------------
# Tiles


@dataclass
class _Level:
    """What generating the tiles of one level needs."""

    index: int
    width: int
    height: int
    bank: list[np.ndarray]  # patches at this level, (PATCH_PX >> index)^2 each


class _SlideModel:
    """The procedural slide: layout field, patch assignment, banks; makes any tile of any level."""

    def __init__(
        self,
        width: int,
        height: int,
        mpp: float,
        tile: int,
        tissue_fraction: float,
        seed: int,
        n_levels: int,
        grid_levels: int | None = None,
    ) -> None:
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
        layout_rng, patch_rng, assign_rng, glass_rng = streams
        self.width, self.height, self.tile = width, height, tile
        rows, cols = -(-height // CELL_PX), -(-width // CELL_PX)
        self.field = _tissue_field(layout_rng, rows, cols)
        weights = _cell_weights(height, CELL_PX)[:, None] * _cell_weights(width, CELL_PX)[None, :]
        self.threshold = np.float32(_threshold_for_fraction(self.field, weights, tissue_fraction))
        self.mask = self.field > self.threshold
        self.tissue_fraction = float((weights * self.mask).sum() / weights.sum())

        strengths = patch_rng.uniform(*STAIN_STRENGTH, size=N_PATCHES)
        bank = [render_patch(patch_rng, PATCH_PX, mpp, float(s)) for s in strengths]
        self.levels: list[_Level] = []
        for index in range(n_levels):
            if index:
                bank = [downsample_2x(p) for p in bank]
            self.levels.append(
                _Level(index, -(-width // 2**index), -(-height // 2**index), bank)
            )
        # Patch cell -> (patch, orientation), one byte each; the grid covers the padded
        # edge tiles of the first ``grid_levels`` levels (the written pyramid). Coarser levels
        # made only for a thumbnail wrap around it, so adding them leaves the pyramid unchanged.
        gridded = self.levels[: grid_levels or n_levels]
        p_rows = max(-(-(-(-lv.height // tile) * tile << lv.index) // PATCH_PX) for lv in gridded)
        p_cols = max(-(-(-(-lv.width // tile) * tile << lv.index) // PATCH_PX) for lv in gridded)
        self.patch = assign_rng.integers(0, N_PATCHES, size=(p_rows, p_cols), dtype=np.uint8)
        self.orientation = assign_rng.integers(0, 8, size=(p_rows, p_cols), dtype=np.uint8)
        noise = glass_rng.integers(-GLASS_NOISE, GLASS_NOISE + 1, size=(tile, tile, 3), dtype=np.int16)
        self.glass = (GLASS_LEVEL + noise).astype(np.uint8)

    # -- layout --------------------------------------------------------------------------------

    def _cell_span(self, start: int, n: int, scale: float, n_cells: int) -> tuple[int, int]:
        """Cells (first, last inclusive) that bilinear sampling of pixels start..start+n touches."""
        u0 = max((start + 0.5) * scale - 0.5, 0.0)
        u1 = min((start + n - 0.5) * scale - 0.5, n_cells - 1.0)
        first = min(math.floor(u0), n_cells - 1)
        last = min(max(math.ceil(u1), first), n_cells - 1)
        return first, last

    def tile_kind(self, level: int, y0: int, x0: int) -> str:
        """``'glass'``, ``'tissue'`` or ``'edge'`` for the tile at level pixels (y0, x0)."""
        scale = 2**level / CELL_PX
        rows, cols = self.field.shape
        r0, r1 = self._cell_span(y0, self.tile, scale, rows)
        c0, c1 = self._cell_span(x0, self.tile, scale, cols)
        window = self.field[r0 : r1 + 1, c0 : c1 + 1]
        if window.max() <= self.threshold:
            return "glass"
        if window.min() > self.threshold:
            return "tissue"
        return "edge"

    def tissue_pixels(self, level: int, y0: int, x0: int) -> np.ndarray:
        """Boolean (tile, tile): pixel centres where the interpolated field exceeds the threshold."""
        scale = 2**level / CELL_PX
        rows, cols = self.field.shape

        def axis(start: int, n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            u = (np.arange(start, start + self.tile, dtype=np.float64) + 0.5) * scale - 0.5
            np.clip(u, 0.0, n_cells - 1, out=u)
            i0 = np.floor(u).astype(np.intp)
            return i0, np.minimum(i0 + 1, n_cells - 1), (u - i0).astype(np.float32)

        r0, r1, tr = axis(y0, rows)
        c0, c1, tc = axis(x0, cols)
        top = self.field[r0]
        strip = top + (self.field[r1] - top) * tr[:, None]
        left = strip[:, c0]
        return (left + (strip[:, c1] - left) * tc[None, :]) > self.threshold

    # -- texture -------------------------------------------------------------------------------

    def texture(self, level: int, y0: int, x0: int) -> np.ndarray:
        """The tissue texture of one tile of ``level`` (uint8 (tile, tile, 3))."""
        bank = self.levels[level].bank
        size = PATCH_PX >> level
        out = np.empty((self.tile, self.tile, 3), dtype=np.uint8)
        y_end, x_end = y0 + self.tile, x0 + self.tile
        grid_rows, grid_cols = self.patch.shape
        for pi in range(y0 // size, (y_end - 1) // size + 1):
            ya, yb = max(y0, pi * size), min(y_end, (pi + 1) * size)
            for pj in range(x0 // size, (x_end - 1) // size + 1):
                xa, xb = max(x0, pj * size), min(x_end, (pj + 1) * size)
                cell = pi % grid_rows, pj % grid_cols  # wraps only for thumbnail-only levels
                patch = bank[self.patch[cell]]
                o = self.orientation[cell]
                if o & 4:
                    patch = patch.transpose(1, 0, 2)
                if o & 1:
                    patch = patch[::-1]
                if o & 2:
                    patch = patch[:, ::-1]
                block = patch[ya - pi * size : yb - pi * size, xa - pj * size : xb - pj * size]
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = block
        return out

    def render_level(self, level: int) -> np.ndarray:
        """The whole of ``level`` as one uint8 (H, W, 3) array; for small levels (a thumbnail)."""
        spec = self.levels[level]
        out = np.empty((-(-spec.height // self.tile) * self.tile, -(-spec.width // self.tile) * self.tile, 3), np.uint8)
        for y0 in range(0, spec.height, self.tile):
            for x0 in range(0, spec.width, self.tile):
                kind = self.tile_kind(level, y0, x0)
                pixels = self.glass if kind == "glass" else self.tile_pixels(level, y0, x0, kind)
                out[y0 : y0 + self.tile, x0 : x0 + self.tile] = pixels
        return out[: spec.height, : spec.width]

    def tile_pixels(self, level: int, y0: int, x0: int, kind: str) -> np.ndarray:
        """RGB of one tile (a non-glass kind)."""
        texture = self.texture(level, y0, x0)
        if kind == "edge":
            glass = ~self.tissue_pixels(level, y0, x0)
            # One 3-byte item per pixel: a masked copy of whole pixels is ~2x faster than a
            # broadcast (H, W, 1) mask over the channels.
            np.copyto(texture.view("V3")[..., 0], self.glass.view("V3")[..., 0], where=glass)
        return texture


def _ordered_map(tasks: Iterator[Callable[[], bytes]], workers: int) -> Iterator[bytes]:
    """Run ``tasks`` on ``workers`` threads, yielding results in order with a bounded lookahead."""
    if workers <= 1:
        for task in tasks:
            yield task()
        return
    window: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for task in tasks:
            window.append(pool.submit(task))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


@dataclass(frozen=True)
class _TileCoder:
    """How the tiles of a slide are JPEG-coded and which TIFF options describe those bytes."""

    encode: Callable[[np.ndarray], bytes]
    page_options: dict


def _tile_coder(jpeg_colour: str, quality: int, glass: np.ndarray) -> _TileCoder:
    """The tile encoder and TIFF options for ``jpeg_colour`` (see `write_large_slide`)."""
    if jpeg_colour == "ycbcr":
        jpeg_args = {"level": quality, "subsampling": (2, 2), "colorspace": "RGB", "outcolorspace": "YCBCR"}
        # The same call tifffile makes for compression='jpeg', photometric='rgb', so the tags it
        # writes (YCbCr photometric, 2x2 subsampling, ReferenceBlackWhite) describe these bytes.
        return _TileCoder(lambda pixels: bytes(imagecodecs.jpeg_encode(pixels, **jpeg_args)), {})
    tables, _ = split_aperio_tile(encode_rgb_coded_jpeg(glass, quality))

    def encode(pixels: np.ndarray) -> bytes:
        tile_tables, tile = split_aperio_tile(encode_rgb_coded_jpeg(pixels, quality))
        if tile_tables != tables:
            # The page's one JPEGTables tag would decode this tile with the wrong tables.
            raise RuntimeError("JPEG tiles of one quality came out with different tables; cannot share them")
        return tile

    # Photometric RGB (2) with RGB-coded data; YCbCrSubSampling is irrelevant for RGB, so (1, 1).
    options = {
        "compressionargs": {"level": quality, "outcolorspace": "rgb"},
        "subsampling": (1, 1),
        "jpegtables": tables,
    }
    return _TileCoder(encode, options)


def _thumbnail_level(width: int, height: int, max_level: int) -> int:
    """The first 2x level whose longer side is at most `THUMBNAIL_PX` (at most ``max_level``)."""
    level, side = 0, max(width, height)
    while side > THUMBNAIL_PX and level < max_level:
        side = -(-side // 2)
        level += 1
    return level


def _check_arguments(
    width: int,
    height: int,
    mpp: float,
    tile: int,
    quality: int,
    tissue_fraction: float,
    seed: int,
    level_downsample: int,
    jpeg_colour: str,
) -> None:
    """ValueError naming the first unusable argument of `write_large_slide`."""
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or value < CELL_PX:
            raise ValueError(f"{name} must be an integer >= {CELL_PX}, got {value!r}")
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    if not isinstance(tile, (int, np.integer)) or tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1-100, got {quality!r}")
    if not 0.0 < tissue_fraction < 1.0:
        raise ValueError(f"tissue_fraction must be in (0, 1), got {tissue_fraction!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if level_downsample not in LEVEL_DOWNSAMPLES:
        raise ValueError(f"level_downsample must be one of {LEVEL_DOWNSAMPLES}, got {level_downsample!r}")
    if jpeg_colour not in JPEG_COLOURS:
        raise ValueError(f"jpeg_colour must be one of {JPEG_COLOURS}, got {jpeg_colour!r}")


def write_large_slide(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    *,
    mpp: float = 0.25,
    n_levels: int | None = None,
    tile: int = 512,
    tissue_fraction: float = 0.3,
    seed: int = 0,
    flat: bool = False,
    quality: int = 80,
    workers: int = 1,
    level_downsample: int = 2,
    jpeg_colour: str = "ycbcr",
    aperio_description: bool = False,
) -> LargeSlideTruth:
    """Write a synthetic H&E slide of any size as a tiled JPEG pyramidal TIFF, in bounded memory.

    Tiles are generated, encoded and written one at a time (a few in flight with ``workers > 1``),
    so memory stays at the patch bank (`N_PATCHES` RGB patches of `PATCH_PX`² and their
    reductions, about 34 MB) plus the layout grid (4 bytes per cell of `CELL_PX`² level-0 pixels,
    15 MB for 150,000 x 100,000, and a few times that while it is made) whatever the slide size.
    Each level is generated at its own resolution, so writing level k costs its own pixels only;
    all-glass tiles reuse one encoded tile. BigTIFF is used when the uncompressed pyramid exceeds
    2 GiB.

    The file appears under its final name only once complete (temporary name, then rename).

    Parameters
    ----------
    path
        Output ``.tiff``; parent folders are created, an existing file is replaced.
    width, height
        Level-0 size in pixels.
    mpp
        Level-0 µm per pixel, written as the resolution (OpenSlide's ``openslide.mpp-x``).
    n_levels
        Pyramid levels written, each ``level_downsample`` times smaller than the previous one
        (``ceil``); default: enough for the last one's longer side to be at most
        `SMALLEST_LEVEL_PX`. The last level is at most ``PATCH_PX`` times smaller than level 0.
    tile
        Tile side in pixels, a multiple of 16.
    tissue_fraction
        Fraction of the slide area covered by tissue, in (0, 1).
    seed
        Non-negative integer; the same arguments always give the same bytes.
    flat
        Write level 0 only (no pyramid); ``n_levels`` must then be ``None`` or 1.
    quality
        JPEG quality, 1-100.
    workers
        Threads generating and encoding tiles (JPEG encoding releases the GIL). The output does
        not depend on it.
    level_downsample
        2, or 4 for the Aperio 40x layout (pages at 1x, 4x, 16x...). The content of a page does not
        depend on it: a 4x page is the 2x slide's level 2 (same seed and internal level count).
    jpeg_colour
        ``"ycbcr"``: YCbCr 4:2:0 JPEG, complete streams, photometric YCbCr (the default, as
        `tiff.write_pyramidal_tiff`). ``"rgb"``: what Aperio writes: RGB-coded JPEG (no colour
        transform) under photometric RGB, abbreviated tiles sharing one JPEGTables tag per page,
        no Adobe or JFIF marker, components numbered 0, 1, 2 (see `aperio`).
    aperio_description
        Write Aperio ImageDescriptions (page 0 carries ``AppMag`` and ``MPP``, so OpenSlide
        reports vendor ``aperio``, ``openslide.mpp-x`` and the objective power) and a stripped
        JPEG thumbnail page (longer side at most `THUMBNAIL_PX`) right after level 0.

    Returns
    -------
    LargeSlideTruth
        The tissue mask on the layout grid, the tissue fraction, sizes and resolution.

    Raises
    ------
    ValueError
        If a size, the level count, the tile size, the quality, the tissue fraction, the level
        downsample or the JPEG colour coding is unusable.
    RuntimeError
        If RGB-coded tiles of one page do not share their JPEG tables (then no JPEGTables tag can
        describe them).
    OSError
        If the file cannot be written.
    """
    _check_arguments(width, height, mpp, tile, quality, tissue_fraction, seed, level_downsample, jpeg_colour)
    step = int(math.log2(level_downsample))  # internal 2x levels per written page
    if flat:
        if n_levels not in (None, 1):
            raise ValueError(f"flat=True writes one level, got n_levels={n_levels!r}")
        n_levels = 1
    elif n_levels is None:
        n_levels = default_n_levels(width, height, factor=level_downsample)
    max_levels = int(math.log2(PATCH_PX)) // step + 1
    if not isinstance(n_levels, (int, np.integer)) or not 1 <= n_levels <= max_levels:
        raise ValueError(f"n_levels must be an integer within 1-{max_levels}, got {n_levels!r}")

    # The procedural model works in 2x levels; a 4x pyramid writes every other one.
    internal = (int(n_levels) - 1) * step + 1
    written = list(range(0, internal, step))
    thumbnail = _thumbnail_level(width, height, int(math.log2(PATCH_PX))) if aperio_description else None
    model = _SlideModel(
        int(width),
        int(height),
        float(mpp),
        int(tile),
        tissue_fraction,
        int(seed),
        max(internal, (thumbnail or 0) + 1),
        grid_levels=internal,
    )
    coder = _tile_coder(jpeg_colour, quality, model.glass)
    glass_bytes = coder.encode(model.glass)

    def level_tiles(level: int) -> Iterator[bytes]:
        spec = model.levels[level]

        def tasks() -> Iterator[Callable[[], bytes]]:
            for y0 in range(0, spec.height, tile):
                for x0 in range(0, spec.width, tile):
                    kind = model.tile_kind(level, y0, x0)
                    if kind == "glass":
                        yield lambda: glass_bytes
                    else:
                        yield lambda y0=y0, x0=x0, kind=kind: coder.encode(model.tile_pixels(level, y0, x0, kind))

        return _ordered_map(tasks(), workers)

    def page_options(level: int) -> dict:
        options = {**level_page_options(mpp, level, tile, quality), **coder.page_options}
        if aperio_description:
            size = (model.levels[level].width, model.levels[level].height)
            options["description"] = (
                level0_description(width, height, tile, quality, mpp)
                if level == 0
                else reduced_description(width, height, tile, quality, size)
            )
        return options

    raw_bytes = sum(model.levels[level].width * model.levels[level].height * 3 for level in written)
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=raw_bytes > 2**31) as writer:
        for level in written:
            spec = model.levels[level]
            writer.write(
                level_tiles(level),
                shape=(spec.height, spec.width, 3),
                dtype=np.uint8,
                **page_options(level),
            )
            if level == 0 and thumbnail is not None:
                _write_thumbnail(writer, model.render_level(thumbnail), width, height, quality)
    return LargeSlideTruth(
        tissue_mask=model.mask,
        cell_px=CELL_PX,
        tissue_fraction=model.tissue_fraction,
        width=int(width),
        height=int(height),
        mpp=float(mpp),
        level_dimensions=tuple((model.levels[level].width, model.levels[level].height) for level in written),
        level_downsample=int(level_downsample),
    )


def _write_thumbnail(writer: tifffile.TiffWriter, pixels: np.ndarray, width: int, height: int, quality: int) -> None:
    """Append the stripped JPEG thumbnail page OpenSlide's Aperio reader names ``thumbnail``."""
    writer.write(
        pixels,
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": quality},
        description=thumbnail_description(width, height, (pixels.shape[1], pixels.shape[0])),
        software=SOFTWARE,
        metadata=None,
        maxworkers=1,
    )


def aperio_n_levels(width: int, height: int, tile: int) -> int:
    """Pages of `write_aperio_like_slide`: 1x, then 4x reductions whose longer side is at least a tile.

    At most `APERIO_LEVELS` (1x, 4x, 16x).
    """
    n, side = 1, max(width, height)
    while n < APERIO_LEVELS and -(-side // 4) >= tile:
        side = -(-side // 4)
        n += 1
    return n


def write_aperio_like_slide(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    seed: int = 0,
    tile: int = 256,
    quality: int = 80,
    flat: bool = False,
    workers: int = 1,
) -> LargeSlideTruth:
    """Write a synthetic slide laid out and coded like an Aperio 40x SVS.

    0.25 µm/px; pages at 1x, 4x and 16x (as many as keep the smallest page's longer side at least
    one tile, see `aperio_n_levels`), a thumbnail page after level 0; RGB-coded JPEG with shared
    tables and no colour marker; Aperio ImageDescription (AppMag 40, MPP 0.25). OpenSlide opens
    it with its ``aperio`` reader. See `write_large_slide` for the other arguments.
    """
    return write_large_slide(
        path,
        width,
        height,
        mpp=0.25,
        n_levels=None if flat else aperio_n_levels(width, height, tile),
        tile=tile,
        seed=seed,
        flat=flat,
        quality=quality,
        workers=workers,
        level_downsample=4,
        jpeg_colour="rgb",
        aperio_description=True,
    )
