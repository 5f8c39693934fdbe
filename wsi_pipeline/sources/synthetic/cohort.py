"""Synthetic cohorts: patients with labels and outcomes, their slides, and the cohort table.

Planning is cheap and pure (no pixels), so the engine can plan once and submit one
`generate_slide` task per entry; `generate_cohort` is the sequential convenience for scripts and
tests.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.errors import WSIPipelineError

from .generate import generate_slide
from .outcomes import sample_outcomes
from .spec import SyntheticSlideSpec

logger = logging.getLogger(__name__)

#: Name of the table `write_cohort_table` writes.
COHORT_TABLE = "cohort.csv"
#: Columns of the cohort table, in order.
TABLE_COLUMNS = ["patient_id", "slide_id", "slide_path", "label", "pfs_months", "event"]
#: Signal coverage of positive slides is drawn per slide from this range.
SIGNAL_FRACTION_RANGE = (0.10, 0.20)

# Spawn keys of the independent random streams of a cohort seed. Separate streams keep, e.g.,
# the labels unchanged when only two_slide_fraction changes.
_STREAM_LABELS = 0
_STREAM_SLIDE_COUNTS = 1
_STREAM_OUTCOMES = 2
_STREAM_SIGNAL = 3
_STREAM_SLIDES = 4


@dataclass(frozen=True)
class SyntheticSlideEntry:
    """One planned slide.

    Attributes
    ----------
    patient_id, slide_id
        e.g. ``"P007"`` and ``"P007_S1"``.
    filename
        File name relative to the cohort folder (``"P007_S1.tiff"``); write it with
        ``generate_slide(entry.spec, directory / entry.filename)``.
    spec
        What to render.
    """

    patient_id: str
    slide_id: str
    filename: str
    spec: SyntheticSlideSpec


@dataclass
class SyntheticCohortPlan:
    """A planned synthetic cohort.

    Attributes
    ----------
    patients
        One row per patient: ``patient_id``, ``label`` (1 = positive/responder), ``pfs_months``,
        ``event`` (1 = progression observed, 0 = censored).
    slides
        One entry per slide, patients in order, slide ``S0`` before ``S1``.
    """

    patients: pd.DataFrame
    slides: list[SyntheticSlideEntry]

    def slide_table(self) -> pd.DataFrame:
        """The cohort table (columns `TABLE_COLUMNS`), one row per slide."""
        slides = pd.DataFrame(
            {
                "patient_id": [entry.patient_id for entry in self.slides],
                "slide_id": [entry.slide_id for entry in self.slides],
                "slide_path": [entry.filename for entry in self.slides],
            }
        )
        table = slides.merge(self.patients, on="patient_id", how="left", validate="many_to_one")
        return table[TABLE_COLUMNS]


def slide_seed(cohort_seed: int, slide_index: int) -> int:
    """Seed of the ``slide_index``-th slide of a cohort: a 32-bit hash of (cohort seed, index).

    Parameters
    ----------
    cohort_seed
        The cohort's seed (non-negative).
    slide_index
        Position of the slide in `SyntheticCohortPlan.slides`.

    Returns
    -------
    int
    """
    sequence = np.random.SeedSequence(cohort_seed, spawn_key=(_STREAM_SLIDES, slide_index))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def _stream(seed: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def _check_plan_arguments(
    n_patients: int, seed: int, positive_fraction: float, two_slide_fraction: float
) -> None:
    where = "synthetic cohort"
    if not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise WSIPipelineError(
            f"n_patients must be a positive integer, got {n_patients!r}",
            where=where,
            fix="ask for at least one patient",
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WSIPipelineError(
            f"seed must be a non-negative integer, got {seed!r}", where=where, fix="use a seed >= 0"
        )
    for name, value in (("positive_fraction", positive_fraction), ("two_slide_fraction", two_slide_fraction)):
        if not 0.0 <= value <= 1.0:
            raise WSIPipelineError(
                f"{name} must be within [0, 1], got {value!r}",
                where=where,
                fix=f"give {name} as a fraction, e.g. 0.3",
            )


def plan_synthetic_cohort(
    n_patients: int,
    seed: int,
    *,
    positive_fraction: float = 0.3,
    two_slide_fraction: float = 0.25,
    width: int = 4096,
    height: int = 4096,
    mpp: float = 0.5,
    n_levels: int = 4,
) -> SyntheticCohortPlan:
    """Plan a cohort: labels, outcomes and one spec per slide. Cheap, pure and deterministic.

    Parameters
    ----------
    n_patients
        Number of patients (ids ``P000``, ``P001``, ...).
    seed
        Cohort seed; the same arguments always give the same plan.
    positive_fraction
        ``round(positive_fraction * n_patients)`` patients are positive, placed at random.
    two_slide_fraction
        ``round(two_slide_fraction * n_patients)`` patients, at random, have two slides; both
        carry the patient's label.
    width, height, mpp, n_levels
        Size, resolution and pyramid depth of every slide.

    Returns
    -------
    SyntheticCohortPlan

    Raises
    ------
    WSIPipelineError
        If an argument is out of range.
    """
    _check_plan_arguments(n_patients, seed, positive_fraction, two_slide_fraction)
    n_positive = round(positive_fraction * n_patients)
    labels = np.zeros(n_patients, dtype=np.int64)
    labels[:n_positive] = 1
    labels = _stream(seed, _STREAM_LABELS).permutation(labels)

    n_slides = np.ones(n_patients, dtype=np.int64)
    n_two = round(two_slide_fraction * n_patients)
    two = _stream(seed, _STREAM_SLIDE_COUNTS).choice(n_patients, size=n_two, replace=False)
    n_slides[two] = 2

    pfs, event = sample_outcomes(_stream(seed, _STREAM_OUTCOMES), labels)
    digits = max(3, len(str(n_patients - 1)))
    patient_ids = [f"P{i:0{digits}d}" for i in range(n_patients)]
    patients = pd.DataFrame({"patient_id": patient_ids, "label": labels, "pfs_months": pfs, "event": event})

    total = int(n_slides.sum())
    signal_fractions = _stream(seed, _STREAM_SIGNAL).uniform(*SIGNAL_FRACTION_RANGE, size=total)
    slides: list[SyntheticSlideEntry] = []
    for patient_id, label, count in zip(patient_ids, labels, n_slides):
        for k in range(count):
            index = len(slides)
            spec = SyntheticSlideSpec(
                width=width,
                height=height,
                mpp=mpp,
                positive=bool(label),
                seed=slide_seed(seed, index),
                n_levels=n_levels,
                signal_fraction=float(round(signal_fractions[index], 3)),
            )
            slide_id = f"{patient_id}_S{k}"
            slides.append(SyntheticSlideEntry(patient_id, slide_id, f"{slide_id}.tiff", spec))
    return SyntheticCohortPlan(patients=patients, slides=slides)


def write_cohort_table(plan: SyntheticCohortPlan, directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/cohort.csv``: one row per slide, `TABLE_COLUMNS`.

    ``slide_path`` is relative to the table's folder. The file is replaced atomically.

    Parameters
    ----------
    plan
        The cohort.
    directory
        Folder of the table (and of the slides); created if missing.

    Returns
    -------
    pathlib.Path
        The table's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / COHORT_TABLE
    table = plan.slide_table()
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def generate_cohort(directory: str | os.PathLike[str], n_patients: int, seed: int, **plan_kwargs) -> Path:
    """Plan a cohort, write every slide not yet in ``directory``, then the table.

    Sequential; the engine parallelises `generate_slide` over ``plan.slides`` itself. A slide
    file already present is taken as done (files only appear complete, see `generate_slide`);
    use a fresh folder after changing the seed or the slide parameters.

    Parameters
    ----------
    directory
        Output folder for the slides and ``cohort.csv``.
    n_patients, seed, **plan_kwargs
        As for `plan_synthetic_cohort`.

    Returns
    -------
    pathlib.Path
        Path of ``cohort.csv``.
    """
    directory = Path(directory)
    plan = plan_synthetic_cohort(n_patients, seed, **plan_kwargs)
    made = 0
    for entry in plan.slides:
        path = directory / entry.filename
        if path.exists():
            logger.info("synthetic slide %s exists, skipped", path)
            continue
        generate_slide(entry.spec, path)
        made += 1
    logger.info(
        "synthetic cohort in %s: %d slides written, %d already there",
        directory,
        made,
        len(plan.slides) - made,
    )
    return write_cohort_table(plan, directory)
