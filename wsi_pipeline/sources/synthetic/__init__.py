"""Deterministic synthetic whole-slide cohorts for demos and tests.

H&E-like pyramidal TIFFs that OpenSlide opens, with known ground truth (tissue and class-signal
masks), grouped into patients with labels and survival outcomes. The class signal of a positive
slide is a few dense clusters of small dark lymphocytes covering 10-20% of its tissue.

Modules: `spec` (what to render, the truth), `layout` (regions), `nuclei`, `stain` (colour),
`fields` (smooth noise, resampling), `slide` (render), `tiff` (write), `generate` (atomic
render + write), `outcomes`, `cohort` (plan, table), `large` (slides of any size, written tile by
tile in bounded memory).
`artefacts`: slides with pen ink, black padding, pale and IHC tissue, blur and debris, and a
fluorescence scan, with the ground truth that tissue segmentation is tested against.
"""

from .artefacts import (
    ArtefactTruth,
    render_artefact_slide,
    render_fluorescence_slide,
    write_artefact_slide,
)
from .cohort import (
    COHORT_TABLE,
    TABLE_COLUMNS,
    SyntheticCohortPlan,
    SyntheticSlideEntry,
    generate_cohort,
    plan_synthetic_cohort,
    slide_seed,
    write_cohort_table,
)
from .generate import generate_slide
from .large import LargeSlideTruth, write_aperio_like_slide, write_large_slide
from .slide import render_slide
from .spec import MASK_DOWNSAMPLE, SlideTruth, SyntheticSlideSpec
from .tiff import write_pyramidal_tiff

__all__ = [
    "COHORT_TABLE",
    "MASK_DOWNSAMPLE",
    "TABLE_COLUMNS",
    "ArtefactTruth",
    "LargeSlideTruth",
    "SlideTruth",
    "SyntheticCohortPlan",
    "SyntheticSlideEntry",
    "SyntheticSlideSpec",
    "generate_cohort",
    "generate_slide",
    "plan_synthetic_cohort",
    "render_artefact_slide",
    "render_fluorescence_slide",
    "render_slide",
    "slide_seed",
    "write_aperio_like_slide",
    "write_artefact_slide",
    "write_cohort_table",
    "write_large_slide",
    "write_pyramidal_tiff",
]
