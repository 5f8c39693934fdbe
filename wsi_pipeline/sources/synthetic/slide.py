"""Render one synthetic H&E slide at level 0, with its ground truth."""

from __future__ import annotations

import math

import numpy as np

from .fields import resample_rows, resize_bilinear, sample_points, smooth_noise
from .layout import SlideLayout, make_layout
from .nuclei import (
    FIBROBLAST,
    LYMPHOCYTE,
    TUMOUR,
    make_stamp_bank,
    sample_centres,
    stamp_nuclei,
)
from .spec import MASK_DOWNSAMPLE, SlideTruth, SyntheticSlideSpec, truth_grid_shape
from .stain import compose_rgb

#: Eosin concentration of stroma, tumour-cell cytoplasm and lymphocyte clusters (scant cytoplasm).
EOSIN_STROMA = 0.55
EOSIN_NEST = 0.33
EOSIN_CLUSTER = 0.2
#: Relative amplitude of the collagen-fibre texture in stroma and elsewhere in tissue.
FIBRE_STROMA = 0.5
FIBRE_OTHER = 0.15
#: Size of one texture cell in µm (fibres are a few texture cells long).
TEXTURE_UM = 2.0
#: Nuclei per µm² of their region.
DENSITY_TUMOUR = 1 / 160
DENSITY_FIBROBLAST = 1 / 700
DENSITY_CLUSTER_LYMPHOCYTE = 1 / 50
DENSITY_SPARSE_LYMPHOCYTE = 1 / 2500
#: Level-0 rows composed at a time; bounds the float temporaries to a few MB.
STRIP_ROWS = 256


def _ridges(field: np.ndarray, width: float = 0.35) -> np.ndarray:
    """1 on the zero level set of a unit-variance field, falling to 0 within about ``width``."""
    return np.exp(-np.square(field / np.float32(width)))


def _eosin_texture(
    rng: np.random.Generator, layout: SlideLayout, spec: SyntheticSlideSpec, texture_um: float
) -> np.ndarray:
    """Eosin concentration on the texture grid: region level x slow stain variation x fibres."""
    cell_um = MASK_DOWNSAMPLE * spec.mpp
    level = np.full(layout.tissue.shape, EOSIN_STROMA, dtype=np.float32)
    level[layout.nest] = EOSIN_NEST
    level[layout.signal] = EOSIN_CLUSTER
    # Staining is never uniform across a section: +-10% over ~0.3 mm.
    level *= 1.0 + 0.1 * smooth_noise(rng, layout.tissue.shape, max(1.0, 300.0 / cell_um))
    amplitude = np.where(layout.nest | layout.signal, FIBRE_OTHER, FIBRE_STROMA).astype(np.float32)

    shape = (math.ceil(spec.height * spec.mpp / texture_um), math.ceil(spec.width * spec.mpp / texture_um))
    to_texture = texture_um / cell_um  # truth cells per texture cell
    level = resize_bilinear(level, shape, to_texture)
    amplitude = resize_bilinear(amplitude, shape, to_texture)
    # Collagen bundles: the near-zero level sets of an anisotropic smooth field are long wavy
    # lines; a horizontal and a vertical family, blended by a slow field, bend into bundles.
    along, across = 14.0 / texture_um, 4.0 / texture_um
    horizontal = _ridges(smooth_noise(rng, shape, (across, along)))
    vertical = _ridges(smooth_noise(rng, shape, (along, across)))
    blend = 1.0 / (1.0 + np.exp(-3.0 * smooth_noise(rng, shape, max(1.0, 40.0 / texture_um))))
    fibres = vertical + (horizontal - vertical) * blend
    return level * (1.0 - amplitude + 2.0 * amplitude * fibres)


def _haematoxylin(
    rngs: list[np.random.Generator], layout: SlideLayout, spec: SyntheticSlideSpec
) -> np.ndarray:
    """Level-0 haematoxylin map holding every nucleus."""
    height, width = spec.height, spec.width
    cell_um2 = (MASK_DOWNSAMPLE * spec.mpp) ** 2
    tissue, nest, signal = layout.tissue, layout.nest, layout.signal
    stroma = tissue & ~nest & ~signal
    populations = [
        (TUMOUR, nest * (DENSITY_TUMOUR * cell_um2)),
        (FIBROBLAST, stroma * (DENSITY_FIBROBLAST * cell_um2)),
        (
            LYMPHOCYTE,
            signal * (DENSITY_CLUSTER_LYMPHOCYTE * cell_um2) + tissue * (DENSITY_SPARSE_LYMPHOCYTE * cell_um2),
        ),
    ]
    canvas = np.zeros((height, width), dtype=np.float32)
    for rng, (kind, expected) in zip(rngs, populations):
        bank = make_stamp_bank(rng, kind, spec.mpp)
        y, x = sample_centres(rng, expected, MASK_DOWNSAMPLE, height, width)
        # Grid cells straddle the outline; keep only nuclei whose centre is on level-0 tissue.
        on_tissue = sample_points(layout.tissue_potential, y, x, 1.0 / MASK_DOWNSAMPLE) > 0
        stamp_nuclei(canvas, rng, bank, y[on_tissue], x[on_tissue], kind.intensity)
    return canvas


def render_slide(spec: SyntheticSlideSpec) -> tuple[np.ndarray, SlideTruth]:
    """Render the level-0 pixels of a synthetic H&E slide.

    White glass with 3-6 irregular tissue pieces (pink stroma with collagen texture, tumour nests
    of large pale nuclei, sparse lymphocytes). A positive slide also has a few dense clusters of
    small dark lymphocytes covering ``spec.signal_fraction`` of the tissue: the class signal.

    Parameters
    ----------
    spec
        What to render; the same spec always gives the same pixels (on the same platform and
        NumPy build: the colour step uses NumPy's float32 ``exp``).

    Returns
    -------
    rgb : numpy.ndarray
        uint8 (height, width, 3).
    truth : SlideTruth
        Tissue and signal masks on the truth grid, and their fractions.

    Notes
    -----
    Single-threaded; about 1-1.5 s for 4096 x 4096 px on one core, and about 8 bytes per
    level-0 pixel at peak (the RGB result, a float32 haematoxylin map, a noise byte).
    """
    # Independent streams per component, so changing one (say, nucleus density) leaves the
    # tissue layout of every slide unchanged.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(6)]
    layout_rng, texture_rng, noise_rng, *nuclei_rngs = streams
    height, width = spec.height, spec.width
    grid_shape = truth_grid_shape(height, width)
    layout = make_layout(
        layout_rng, grid_shape, MASK_DOWNSAMPLE * spec.mpp, spec.positive, spec.signal_fraction
    )
    texture_um = max(TEXTURE_UM, spec.mpp)
    eosin = _eosin_texture(texture_rng, layout, spec, texture_um)
    haematoxylin = _haematoxylin(nuclei_rngs, layout, spec)
    noise = np.frombuffer(noise_rng.bytes(height * width), dtype=np.uint8).reshape(height, width)

    rgb = np.empty((height, width, 3), dtype=np.uint8)
    tissue_pixels = 0
    for start in range(0, height, STRIP_ROWS):
        rows = min(STRIP_ROWS, height - start)
        tissue = resample_rows(layout.tissue_potential, start, rows, width, 1.0 / MASK_DOWNSAMPLE) > 0
        tissue_pixels += int(np.count_nonzero(tissue))
        e = resample_rows(eosin, start, rows, width, spec.mpp / texture_um)
        e *= tissue
        stop = start + rows
        compose_rgb(haematoxylin[start:stop], e, noise[start:stop], rgb[start:stop])

    n_tissue_cells = int(layout.tissue.sum())
    truth = SlideTruth(
        tissue_mask=layout.tissue,
        signal_mask=layout.signal,
        mask_downsample=MASK_DOWNSAMPLE,
        tissue_fraction=tissue_pixels / (height * width),
        signal_fraction_of_tissue=int(layout.signal.sum()) / max(n_tissue_cells, 1),
    )
    return rgb, truth
