"""Synthetic slides with the artefacts tissue segmentation must cope with, and their ground truth.

`render_artefact_slide` starts from an ordinary synthetic H&E slide (`render_slide`) and adds,
each with its own truth mask: a pale tissue piece (stain optical density cut to a third), an
IHC piece (DAB brown on a pale haematoxylin counterstain), out-of-focus patches, blue, green and
black marker strokes, a black scanner-padding band and grey debris on the glass.
`render_fluorescence_slide` draws a DAPI-like fluorescence scan (dark background, bright blue
nuclei, dim autofluorescence) on the same kind of tissue layout.

Every colour change is made in optical density (Beer-Lambert), as on glass: ink over tissue
multiplies their transmittances, which is why a stroke over tissue is darker than over glass.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fields import resample_rows, smooth_noise
from .generate import write_rendered_slide
from .layout import make_layout
from .nuclei import LYMPHOCYTE, TUMOUR, make_stamp_bank, sample_centres, stamp_nuclei
from .slide import render_slide
from .spec import MASK_DOWNSAMPLE, SyntheticSlideSpec, truth_grid_shape
from .stain import BACKGROUND_OD, EOSIN, HAEMATOXYLIN

#: Glass grey level of the H&E renderer; ink colours below are as seen over it.
GLASS = 240.0
#: Marker colours at full ink density over glass (RGB): a dark pure blue, a mid green, near black.
INK_RGB = {"blue": (40, 80, 170), "green": (50, 140, 90), "black": (20, 20, 24)}
#: DAB (the brown IHC chromogen) optical density per unit concentration in R, G, B.
DAB = np.array([0.27, 0.57, 0.78], dtype=np.float32)
#: A pixel of the clean render is tissue when eosin or haematoxylin adds this much green OD to the
#: glass; eosin alone adds at least ~0.2 anywhere in tissue, glass noise at most ~0.02.
TISSUE_OD = 0.08
#: The pale piece keeps this fraction of its stain optical density.
PALE_OD_FACTOR = 1.0 / 3.0


@dataclass
class ArtefactTruth:
    """Ground truth of `render_artefact_slide`, every mask level-0 (H, W) bool.

    Attributes
    ----------
    tissue
        All real tissue (H&E, pale and IHC pieces), under ink and blur too: the pixels that
        carry stain in the clean render.
    ink
        Pen strokes by colour (``"blue"``, ``"green"``, ``"black"``), within the nominal stroke
        width (their soft edges fade out about 5 µm beyond it).
    border
        The black scanner-padding band.
    pale, ihc
        Tissue of the pale piece and of the IHC piece (empty when the slide has too few pieces).
    blur
        The out-of-focus rectangles (they may include some glass).
    debris
        Grey and black specks on the glass (dust, not tissue).
    mpp
        Level-0 µm/px.
    """

    tissue: np.ndarray
    ink: dict[str, np.ndarray]
    border: np.ndarray
    pale: np.ndarray
    ihc: np.ndarray
    blur: np.ndarray
    debris: np.ndarray
    mpp: float

    @property
    def pen(self) -> np.ndarray:
        """Union of the ink of every colour."""
        return np.logical_or.reduce(list(self.ink.values()))


def _od(rgb: np.ndarray) -> np.ndarray:
    """Optical density against a white (255) light source, float32 (..., 3)."""
    return -np.log(np.maximum(rgb, 1).astype(np.float32) / np.float32(255.0))


def _to_rgb(od: np.ndarray) -> np.ndarray:
    return np.clip(np.exp(-od) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _upsample_nearest(grid: np.ndarray, height: int, width: int, cell: int) -> np.ndarray:
    """Each level-0 pixel takes the value of its grid cell."""
    return grid[(np.arange(height) // cell)[:, None], (np.arange(width) // cell)[None, :]]


def _smooth_level0(
    rng: np.random.Generator, height: int, width: int, mpp: float, feature_um: float
) -> np.ndarray:
    """Unit-variance smooth noise with features of about ``feature_um``, drawn coarse, read at level 0."""
    cell_um = MASK_DOWNSAMPLE * mpp
    coarse = smooth_noise(rng, truth_grid_shape(height, width), max(1.0, feature_um / cell_um))
    return resample_rows(coarse, 0, height, width, 1.0 / MASK_DOWNSAMPLE)


def _stain_pieces(
    rng: np.random.Generator, rgb: np.ndarray, tissue: np.ndarray, grid_tissue: np.ndarray, mpp: float
) -> tuple[np.ndarray, np.ndarray]:
    """Make one tissue piece pale and recolour another as IHC, in place; return their masks."""
    height, width = tissue.shape
    pale = np.zeros_like(tissue)
    ihc = np.zeros_like(tissue)
    labels, n_pieces = ndimage.label(grid_tissue)
    if n_pieces < 2:
        return pale, ihc
    # Label every grid cell with its nearest piece, so level-0 tissue just outside a cell that
    # the grid calls glass still belongs to its piece.
    _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    nearest = _upsample_nearest(labels[iy, ix], height, width, MASK_DOWNSAMPLE)
    pale_label, ihc_label = (int(v) + 1 for v in rng.permutation(n_pieces)[:2])
    pale = tissue & (nearest == pale_label)
    ihc = tissue & (nearest == ihc_label)

    # Pale: the same section, stained a third as strongly (under-staining, a thin cut).
    od = _od(rgb[pale])
    rgb[pale] = _to_rgb(BACKGROUND_OD + (od - BACKGROUND_OD) * PALE_OD_FACTOR)

    # IHC: unmix the render's haematoxylin and eosin (their vectors are known exactly), then
    # recompose with a lighter haematoxylin counterstain, a faint blue tint where the eosin was
    # (counterstained cytoplasm and stroma), and DAB on about half the piece in irregular fields.
    stains = np.stack([HAEMATOXYLIN, EOSIN, np.cross(HAEMATOXYLIN, EOSIN)])
    conc = (_od(rgb[ihc]) - BACKGROUND_OD) @ np.linalg.inv(stains)
    h, e = np.clip(conc[:, 0], 0, None), np.clip(conc[:, 1], 0, None)
    field_ = _smooth_level0(rng, height, width, mpp, 150.0)[ihc]
    threshold = np.quantile(field_, 0.5)
    dab = np.clip((field_ - threshold) * 2.0, 0.0, 0.7) * (0.6 + 0.8 * np.minimum(h, 1.0))
    od = BACKGROUND_OD + (0.5 * h + 0.3 * e)[:, None] * HAEMATOXYLIN + dab[:, None] * DAB
    rgb[ihc] = _to_rgb(od)
    return pale, ihc


def _blur_patches(
    rng: np.random.Generator, rgb: np.ndarray, tissue: np.ndarray, mpp: float, n: int = 2
) -> np.ndarray:
    """Blur ``n`` rectangles centred on tissue with a Gaussian of 6 µm sigma (out of focus)."""
    height, width = tissue.shape
    blur = np.zeros_like(tissue)
    ys, xs = np.nonzero(tissue[::8, ::8])
    if ys.size == 0:
        return blur
    sigma = 6.0 / mpp
    margin = math.ceil(4 * sigma)
    for index in rng.choice(ys.size, size=min(n, ys.size), replace=False):
        half_h = int(rng.uniform(150, 250) / mpp)
        half_w = int(rng.uniform(150, 250) / mpp)
        cy, cx = int(ys[index]) * 8, int(xs[index]) * 8
        y0, y1 = max(0, cy - half_h), min(height, cy + half_h)
        x0, x1 = max(0, cx - half_w), min(width, cx + half_w)
        # Filter a margin around the rectangle so its inside is blurred as if the whole
        # field were out of focus, then paste back only the rectangle.
        py0, py1 = max(0, y0 - margin), min(height, y1 + margin)
        px0, px1 = max(0, x0 - margin), min(width, x1 + margin)
        window = rgb[py0:py1, px0:px1].astype(np.float32)
        blurred = ndimage.gaussian_filter(window, sigma=(sigma, sigma, 0), mode="nearest")
        rgb[y0:y1, x0:x1] = np.clip(blurred[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0] + 0.5, 0, 255).astype(np.uint8)
        blur[y0:y1, x0:x1] = True
    return blur


def _stroke_distance(
    rng: np.random.Generator, anchor: tuple[float, float], height: int, width: int, coarse: int
) -> np.ndarray:
    """Distance (level-0 px) to a wavy polyline through ``anchor``, computed on a coarse grid."""
    diagonal = math.hypot(height, width)
    length = rng.uniform(0.45, 0.65) * diagonal
    angle = rng.uniform(0, math.pi)
    direction = np.array([math.sin(angle), math.cos(angle)])  # (dy, dx)
    normal = np.array([direction[1], -direction[0]])
    t = np.linspace(-length / 2, length / 2, int(length / coarse) * 2 + 2)
    # Two harmonics: a hand-drawn line bends slowly and wobbles a little.
    amplitude = rng.uniform(0.03, 0.06) * min(height, width)
    slow, fast = rng.uniform(0.35, 0.6) * length, rng.uniform(0.08, 0.15) * length
    wave = amplitude * np.sin(2 * math.pi * t / slow + rng.uniform(0, 2 * math.pi))
    wave += 0.25 * amplitude * np.sin(2 * math.pi * t / fast + rng.uniform(0, 2 * math.pi))
    points = np.asarray(anchor)[None, :] + t[:, None] * direction[None, :] + wave[:, None] * normal[None, :]
    shape = (-(-height // coarse), -(-width // coarse))
    line = np.ones(shape, dtype=bool)
    rows = np.round(points[:, 0] / coarse - 0.5).astype(int)
    cols = np.round(points[:, 1] / coarse - 0.5).astype(int)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    line[rows[inside], cols[inside]] = False
    distance = ndimage.distance_transform_edt(line).astype(np.float32) * coarse
    return resample_rows(distance, 0, height, width, 1.0 / coarse)


def _draw_pen(
    rng: np.random.Generator, rgb: np.ndarray, tissue: np.ndarray, mpp: float
) -> dict[str, np.ndarray]:
    """Draw a blue, a green and a black stroke, each through a tissue piece; return their masks."""
    height, width = tissue.shape
    ink: dict[str, np.ndarray] = {}
    ys, xs = np.nonzero(tissue[::8, ::8])
    coarse = 4
    for colour, target in INK_RGB.items():
        if ys.size:
            index = rng.integers(ys.size)
            anchor = (float(ys[index] * 8), float(xs[index] * 8))
        else:
            anchor = (height / 2, width / 2)
        distance = _stroke_distance(rng, anchor, height, width, coarse)
        half_width = rng.uniform(100, 160) / mpp
        edge = max(1.0, 5.0 / mpp)  # ink edges fade over ~5 µm
        density = np.clip((half_width - distance) / edge + 0.5, 0.0, 1.0)
        # Slightly translucent and uneven, like a felt-tip dragged over a coverslip.
        density *= 0.85 + 0.15 * np.clip(_smooth_level0(rng, height, width, mpp, 200.0), -1.0, 1.0)
        od = -np.log(np.asarray(target, dtype=np.float32) / np.float32(GLASS))
        drawn = density > 0
        rgb[drawn] = _to_rgb(_od(rgb[drawn]) + density[drawn][:, None] * od[None, :])
        ink[colour] = distance <= half_width
    return ink


def _draw_border(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Black padding along one or two edges (a scanner filling outside its scan area)."""
    height, width = rgb.shape[:2]
    border = np.zeros((height, width), dtype=bool)
    edges = rng.permutation(4)[: int(rng.integers(1, 3))]
    for edge in edges:
        size = height if edge in (0, 1) else width
        band = max(2, int(rng.uniform(0.015, 0.03) * size))
        if edge == 0:
            border[:band] = True
        elif edge == 1:
            border[-band:] = True
        elif edge == 2:
            border[:, :band] = True
        else:
            border[:, -band:] = True
    n = int(border.sum())
    rgb[border] = rng.integers(0, 14, size=(n, 1), dtype=np.uint8) + rng.integers(0, 3, size=(n, 3), dtype=np.uint8)
    return border


def _draw_debris(
    rng: np.random.Generator,
    rgb: np.ndarray,
    keep_clear: np.ndarray,
    mpp: float,
    n_small: int = 30,
    n_large: int = 3,
) -> np.ndarray:
    """Grey and black specks on the glass: many small ones and a few grey clumps larger than a tissue speck."""
    height, width = keep_clear.shape
    debris = np.zeros((height, width), dtype=bool)
    # Centres at least 100 µm from tissue and the padding band.
    clear_px = int(100 / mpp)
    free = ~ndimage.binary_dilation(keep_clear[::8, ::8], iterations=max(1, clear_px // 8))
    ys, xs = np.nonzero(free)
    if ys.size == 0:
        return debris
    diameters = np.concatenate([rng.uniform(10, 60, n_small), rng.uniform(180, 260, n_large)]) / mpp
    # Optical density, the same in every channel: small specks from light grey to near black,
    # the clumps light to mid grey (lint, dust under the coverslip), too light to pass for ink.
    greys = np.concatenate([rng.uniform(0.3, 2.5, n_small), rng.uniform(0.25, 0.7, n_large)])
    for diameter, grey in zip(diameters, greys):
        index = rng.integers(ys.size)
        cy, cx = int(ys[index]) * 8 + 4, int(xs[index]) * 8 + 4
        r = diameter / 2
        radius = math.ceil(1.4 * r) + 1
        y0, y1 = max(0, cy - radius), min(height, cy + radius + 1)
        x0, x1 = max(0, cx - radius), min(width, cx + radius + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        theta = np.arctan2(yy - cy, xx - cx)
        # An irregular outline: a few random harmonics of the radius around the centre.
        outline = np.ones_like(theta)
        for k in (2, 3, 5):
            outline += rng.uniform(0.0, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        inside = np.hypot(yy - cy, xx - cx) <= r * outline
        tint = 1.0 + rng.uniform(-0.04, 0.04, size=3)
        patch = rgb[y0:y1, x0:x1]
        patch[inside] = _to_rgb(_od(patch[inside]) + grey * tint[None, :].astype(np.float32))
        debris[y0:y1, x0:x1] |= inside
    return debris


def render_artefact_slide(
    width: int = 3072, height: int = 2048, mpp: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, ArtefactTruth]:
    """Render an H&E slide with pale and IHC tissue, blur, pen ink, black padding and debris.

    Parameters
    ----------
    width, height
        Level-0 size in pixels (at least a few hundred each, so strokes and pieces fit).
    mpp
        Level-0 µm/px; every artefact size is physical, so the slide looks the same at any mpp.
    seed
        Non-negative integer; the same arguments always give the same pixels.

    Returns
    -------
    rgb : numpy.ndarray
        uint8 (height, width, 3).
    truth : ArtefactTruth
        Level-0 masks of tissue and of each artefact.

    Notes
    -----
    About 4 s for 3072 x 2048 px on one core, 1-1.5 s of it for the artefacts and the rest for
    `render_slide`. Pale and IHC pieces are two of the render's 3-6 tissue pieces, drawn at
    random; a slide with a single piece has neither.
    """
    spec = SyntheticSlideSpec(width=width, height=height, mpp=mpp, positive=False, seed=seed)
    rgb, slide_truth = render_slide(spec)
    # Tissue truth from the clean render itself: every tissue pixel carries eosin, glass does not.
    excess_green_od = _od(rgb[..., 1]) - BACKGROUND_OD
    near_grid_tissue = ndimage.binary_dilation(slide_truth.tissue_mask, iterations=1)
    tissue = (excess_green_od > TISSUE_OD) & _upsample_nearest(near_grid_tissue, height, width, MASK_DOWNSAMPLE)
    del excess_green_od

    # A separate stream from the renderer's, one per artefact, so adding one leaves the others.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0xA27E]).spawn(5)]
    pale, ihc = _stain_pieces(rngs[0], rgb, tissue, slide_truth.tissue_mask, mpp)
    blur = _blur_patches(rngs[1], rgb, tissue & ~pale & ~ihc, mpp)
    ink = _draw_pen(rngs[2], rgb, tissue, mpp)
    border = _draw_border(rngs[3], rgb)
    debris = _draw_debris(rngs[4], rgb, tissue | border | np.logical_or.reduce(list(ink.values())), mpp)
    truth = ArtefactTruth(
        tissue=tissue, ink=ink, border=border, pale=pale, ihc=ihc, blur=blur, debris=debris, mpp=mpp
    )
    return rgb, truth


def render_fluorescence_slide(
    width: int = 3072, height: int = 2048, mpp: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Render a DAPI-like fluorescence scan: dark background, bright blue nuclei in tissue.

    Parameters
    ----------
    width, height
        Level-0 size in pixels.
    mpp
        Level-0 µm/px.
    seed
        Non-negative integer; the same arguments always give the same pixels.

    Returns
    -------
    rgb : numpy.ndarray
        uint8 (height, width, 3).
    tissue : numpy.ndarray
        Level-0 (height, width) bool, True on tissue.
    """
    rng_layout, rng_nuclei, rng_glow, rng_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0xF1D0]).spawn(4)
    )
    grid_shape = truth_grid_shape(height, width)
    layout = make_layout(rng_layout, grid_shape, MASK_DOWNSAMPLE * mpp, positive=False, signal_fraction=0.15)
    tissue = resample_rows(layout.tissue_potential, 0, height, width, 1.0 / MASK_DOWNSAMPLE) > 0

    cell_um2 = (MASK_DOWNSAMPLE * mpp) ** 2
    nuclei = np.zeros((height, width), dtype=np.float32)
    for kind, density in ((TUMOUR, 1 / 250), (LYMPHOCYTE, 1 / 1500)):
        bank = make_stamp_bank(rng_nuclei, kind, mpp)
        y, x = sample_centres(rng_nuclei, layout.tissue * (density * cell_um2), MASK_DOWNSAMPLE, height, width)
        on_tissue = tissue[y, x]
        stamp_nuclei(nuclei, rng_nuclei, bank, y[on_tissue], x[on_tissue], (0.6, 1.0))
    np.minimum(nuclei, 1.0, out=nuclei)

    # Dim, uneven autofluorescence of the tissue (mostly green), bright DAPI in nuclei, and a
    # dark, slightly noisy background (camera offset and read noise).
    glow = tissue * (0.7 + 0.3 * np.clip(_smooth_level0(rng_glow, height, width, mpp, 150.0), -1.0, 1.0))
    noise = rng_noise.integers(0, 7, size=(height, width), dtype=np.uint8).astype(np.float32)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    for channel, (background, autofluorescence, dapi) in enumerate(((4, 16, 20), (5, 30, 70), (7, 20, 235))):
        value = background + noise + autofluorescence * glow + dapi * nuclei
        rgb[..., channel] = np.clip(value + 0.5, 0, 255).astype(np.uint8)
    return rgb, tissue


def write_artefact_slide(
    path: str | os.PathLike[str],
    width: int = 3072,
    height: int = 2048,
    mpp: float = 2.0,
    seed: int = 0,
    n_levels: int = 4,
) -> ArtefactTruth:
    """Render `render_artefact_slide` and write it atomically as a pyramidal TIFF.

    Parameters
    ----------
    path
        Output ``.tiff``; replaced if it exists, parent folders created.
    width, height, mpp, seed
        As for `render_artefact_slide`.
    n_levels
        Pyramid levels (each a 2x reduction).

    Returns
    -------
    ArtefactTruth
        The truth of the written slide (the TIFF is JPEG-compressed, the truth is exact).

    Raises
    ------
    WSIPipelineError
        If the file cannot be written.
    """
    rgb, truth = render_artefact_slide(width, height, mpp, seed)
    write_rendered_slide(path, rgb, mpp, n_levels)
    return truth
