"""Synthetic cohorts: patients with targets and outcomes, their slides, and the cohort table.

Planning is cheap and pure (no pixels), so the engine can plan once and submit one
`generate_slide` task per entry; `generate_cohort` is the sequential convenience for scripts and
tests.

The targets follow the task type a cohort is made for (``targets``):

``binary``
    ``label`` 1 for ``positive_fraction`` of the patients, whose slides carry the class
    signal (lymphocyte clusters over 10-20% of the tissue); ``pfs_months``/``event`` drawn
    with a longer mean for label 1.
``multiclass``
    ``label`` 0, 1 or 2 (a third of the patients each): no signal, a little (6-10% of the
    tissue), a lot (22-32%).
``regression``
    A latent ``u`` ~ U(0, 1) per patient sets the signal's coverage, ``3% + 32% u``, and the
    ``target`` column, ``10 u`` plus Gaussian noise (sd 0.5); ``label`` is ``u >= 0.5``.
``survival``
    The same latent coverage; progression is exponential with mean ``8 exp(1.6 u)`` months
    (more signal, later progression), censored at an end of follow-up uniform in 6-24
    months (about half the patients have an event); ``label`` is ``u >= 0.5``.

The binary plan is the demo's, unchanged; the other types draw their latent from their own
random stream, so the slide counts and slide seeds of a seed are the same for every type.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
#: Columns of the cohort table, in order (a regression cohort adds ``target`` after ``event``).
TABLE_COLUMNS = ["patient_id", "slide_id", "slide_path", "label", "pfs_months", "event"]
#: Signal coverage of positive slides is drawn per slide from this range.
SIGNAL_FRACTION_RANGE = (0.10, 0.20)
#: The task types a synthetic cohort can be made for.
TARGETS = ("binary", "multiclass", "regression", "survival")
Targets = Literal["binary", "multiclass", "regression", "survival"]
#: Signal coverage of the multiclass cohort's classes 1 and 2 (class 0 has none).
CLASS_SIGNAL_RANGES = ((0.06, 0.10), (0.22, 0.32))
#: Signal coverage ``low + span * u`` of the latent cohorts (regression, survival).
LATENT_SIGNAL = (0.03, 0.32)
#: Regression target ``scale * u + N(0, noise)``.
REGRESSION_SCALE, REGRESSION_NOISE = 10.0, 0.5
#: Survival: progression is exponential with mean ``base * exp(slope * u)`` months, censored
#: at an end of follow-up uniform in this window (about half the patients have an event).
SURVIVAL_BASE_MONTHS, SURVIVAL_SLOPE = 8.0, 1.6
SURVIVAL_FOLLOW_UP_MONTHS = (6.0, 24.0)

# Spawn keys of the independent random streams of a cohort seed. Separate streams keep, e.g.,
# the labels unchanged when only two_slide_fraction changes.
_STREAM_LABELS = 0
_STREAM_SLIDE_COUNTS = 1
_STREAM_OUTCOMES = 2
_STREAM_SIGNAL = 3
_STREAM_SLIDES = 4
_STREAM_LATENT = 5


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
        extra = [c for c in self.patients.columns if c not in TABLE_COLUMNS]
        return table[TABLE_COLUMNS + extra]


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
    n_patients: int, seed: int, positive_fraction: float, two_slide_fraction: float, targets: str = "binary"
) -> None:
    where = "synthetic cohort"
    if targets not in TARGETS:
        raise WSIPipelineError(f"unknown targets {targets!r}", where=where, fix=f"use one of {', '.join(TARGETS)}")
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
    targets: Targets = "binary",
) -> SyntheticCohortPlan:
    """Plan a cohort: targets, outcomes and one spec per slide. Cheap, pure and deterministic.

    Parameters
    ----------
    n_patients
        Number of patients (ids ``P000``, ``P001``, ...).
    seed
        Cohort seed; the same arguments always give the same plan.
    positive_fraction
        Binary cohorts: ``round(positive_fraction * n_patients)`` patients are positive,
        placed at random.
    two_slide_fraction
        ``round(two_slide_fraction * n_patients)`` patients, at random, have two slides; both
        carry the patient's signal.
    width, height, mpp, n_levels
        Size, resolution and pyramid depth of every slide.
    targets
        The task type the cohort is made for (see the module docstring).

    Returns
    -------
    SyntheticCohortPlan

    Raises
    ------
    WSIPipelineError
        If an argument is out of range.
    """
    _check_plan_arguments(n_patients, seed, positive_fraction, two_slide_fraction, targets)
    n_slides = np.ones(n_patients, dtype=np.int64)
    n_two = round(two_slide_fraction * n_patients)
    two = _stream(seed, _STREAM_SLIDE_COUNTS).choice(n_patients, size=n_two, replace=False)
    n_slides[two] = 2
    digits = max(3, len(str(n_patients - 1)))
    patient_ids = [f"P{i:0{digits}d}" for i in range(n_patients)]
    total = int(n_slides.sum())
    signal_draws = _stream(seed, _STREAM_SIGNAL).uniform(0.0, 1.0, size=total)

    if targets == "binary":
        labels = np.zeros(n_patients, dtype=np.int64)
        labels[: round(positive_fraction * n_patients)] = 1
        labels = _stream(seed, _STREAM_LABELS).permutation(labels)
        pfs, event = sample_outcomes(_stream(seed, _STREAM_OUTCOMES), labels)
        patients = pd.DataFrame({"patient_id": patient_ids, "label": labels, "pfs_months": pfs, "event": event})
        coverage = [SIGNAL_FRACTION_RANGE if label else None for label in labels]
    else:
        patients, coverage = _latent_targets(targets, patient_ids, seed)

    slides: list[SyntheticSlideEntry] = []
    for patient_id, cover, count in zip(patient_ids, coverage, n_slides):
        for k in range(count):
            index = len(slides)
            low, high = SIGNAL_FRACTION_RANGE if cover is None else cover  # unused without signal, as before
            fraction = low + (high - low) * signal_draws[index]
            spec = SyntheticSlideSpec(
                width=width,
                height=height,
                mpp=mpp,
                positive=cover is not None,
                seed=slide_seed(seed, index),
                n_levels=n_levels,
                signal_fraction=float(round(fraction, 3)),
            )
            slide_id = f"{patient_id}_S{k}"
            slides.append(SyntheticSlideEntry(patient_id, slide_id, f"{slide_id}.tiff", spec))
    return SyntheticCohortPlan(patients=patients, slides=slides)


def _latent_targets(targets: str, patient_ids: list[str], seed: int) -> tuple[pd.DataFrame, list[tuple[float, float] | None]]:
    """Targets and per-patient signal coverage range of the multiclass, regression and survival cohorts."""
    n = len(patient_ids)
    rng = _stream(seed, _STREAM_LATENT)
    if targets == "multiclass":
        classes = rng.permutation(np.arange(n) % 3)
        pfs, event = sample_outcomes(_stream(seed, _STREAM_OUTCOMES), (classes > 0).astype(np.int64))
        coverage = [None if c == 0 else CLASS_SIGNAL_RANGES[c - 1] for c in classes]
        frame = pd.DataFrame({"patient_id": patient_ids, "label": classes.astype(np.int64), "pfs_months": pfs, "event": event})
        return frame, coverage
    u = rng.uniform(0.0, 1.0, size=n)
    low, span = LATENT_SIGNAL
    # A narrow band around the patient's coverage, so a second slide differs a little.
    coverage = [(low + span * max(v - 0.02, 0.0), low + span * min(v + 0.02, 1.0)) for v in u]
    labels = (u >= 0.5).astype(np.int64)
    outcomes = _stream(seed, _STREAM_OUTCOMES)
    if targets == "survival":
        progression = outcomes.exponential(SURVIVAL_BASE_MONTHS * np.exp(SURVIVAL_SLOPE * u))
        follow_up = outcomes.uniform(*SURVIVAL_FOLLOW_UP_MONTHS, size=n)
        event = (progression <= follow_up).astype(np.int64)
        pfs = np.maximum(np.round(np.minimum(progression, follow_up), 1), 0.1)
        return pd.DataFrame({"patient_id": patient_ids, "label": labels, "pfs_months": pfs, "event": event}), coverage
    pfs, event = sample_outcomes(outcomes, labels)
    target = np.round(REGRESSION_SCALE * u + rng.normal(0.0, REGRESSION_NOISE, size=n), 2)
    frame = pd.DataFrame({"patient_id": patient_ids, "label": labels, "pfs_months": pfs, "event": event, "target": target})
    return frame, coverage


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
