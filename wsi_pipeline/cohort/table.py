"""The cohort table: patients, their slides, targets and outcomes, checked on load.

What a patient's target is belongs to the workflow's task (:mod:`wsi_pipeline.mil.tasks`): a
0/1 label, a class, a number, or a follow-up time with an event indicator. The loader keeps
the task's target columns (checked by the task, with errors naming the column and the
patients), the optional follow-up columns ``pfs_months``/``event`` and ``site``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError

if TYPE_CHECKING:  # the task modules import torch; only the loader needs them, on first use
    from wsi_pipeline.mil.tasks.base import Task

REQUIRED_COLUMNS = ("patient_id", "slide_path")
#: Per-patient columns kept when the table has them (besides the task's target columns).
OUTCOME_COLUMNS = ("pfs_months", "event")
#: The column naming each patient's site (centre, scanner batch), for site-stratified folds.
SITE_COLUMN = "site"


@dataclass(frozen=True)
class SlideRecord:
    """One slide of the cohort, as the per-slide tasks need it."""

    slide_id: str
    patient_id: str
    path: Path
    mpp_override: float | None = None


@dataclass(frozen=True)
class Cohort:
    """A checked cohort.

    Attributes
    ----------
    slides
        One row per slide: ``slide_id``, ``patient_id``, ``path`` (absolute), ``mpp`` (override or NaN).
        Slides of excluded patients are kept (they are still tiled and embedded).
    patients
        One row per patient with a target: ``patient_id``, the task's target columns (as the
        task decodes them: 0/1 labels, class names, numbers, time and event), then
        ``pfs_months``/``event`` and ``site`` when the table has them.
    source
        The table it came from.
    task
        The workflow's task, bound to these patients (a multiclass task knows its classes).
    excluded
        Patient id -> why the patient has no target and is left out of training (a survival
        task's patients without follow-up).
    """

    slides: pd.DataFrame
    patients: pd.DataFrame
    source: Path
    task: Task | None = None
    excluded: dict[str, str] = field(default_factory=dict)

    def slide_records(self) -> list[SlideRecord]:
        """Return the slides as records, in table order."""
        return [
            SlideRecord(
                slide_id=row.slide_id,
                patient_id=row.patient_id,
                path=Path(row.path),
                mpp_override=None if pd.isna(row.mpp) else float(row.mpp),
            )
            for row in self.slides.itertuples(index=False)
        ]

    @property
    def targets(self) -> dict[str, Any]:
        """Patient id → raw target values: one value (label, class, number), or ``(time, event)``."""
        from wsi_pipeline.mil.targets import patient_targets

        assert self.task is not None
        return patient_targets(self.task, self.patients)

    @property
    def labels(self) -> dict[str, Any]:
        """Patient id → target (the same as :attr:`targets`; for a binary task the 0/1 label)."""
        return self.targets

    @property
    def sites(self) -> dict[str, str] | None:
        """Patient id → site, when the table has a ``site`` column."""
        if SITE_COLUMN not in self.patients.columns:
            return None
        return dict(zip(self.patients["patient_id"], self.patients[SITE_COLUMN].astype(str)))


def _fail(table: Path, what: str, fix: str) -> WSIPipelineError:
    return WSIPipelineError(what, where=str(table), fix=fix)


def _as_task(task: Task | str | None) -> Task:
    """The task to load for: a task, a binary task on a named label column, or the default binary task."""
    from wsi_pipeline.mil.tasks.binary import BinaryTask
    from wsi_pipeline.mil.tasks.settings import BinaryConfig

    if task is None:
        return BinaryTask()
    if isinstance(task, str):
        return BinaryTask(BinaryConfig(label_column=task))
    return task


def load_cohort(
    table: str | Path, slide_root: str | Path | None = None, task: Task | str | None = None, keep: Sequence[str] = ()
) -> Cohort:
    """Read and check a cohort CSV.

    Parameters
    ----------
    table
        CSV with ``patient_id``, ``slide_path`` and the task's target columns; optional
        ``slide_id`` (default: the file name without suffix), ``mpp`` (overrides the slide's
        µm/px), ``pfs_months`` and ``event`` (follow-up), ``site``.
    slide_root
        Folder that relative slide paths start from (default: the table's folder).
    task
        The workflow's task (built, not bound); a column name means a binary task on that
        label column; default: a binary task on ``label``.
    keep
        Further per-patient columns to keep (the workflow's ``scoring.subgroups``); each must
        be in the table, with one value per patient.

    Returns
    -------
    Cohort
        Slides and patients, with the task bound to the patients. Missing slide files are
        *not* an error here: they fail alone in the run (and ``--dry-run`` lists them).
        Patients without a target that the task allows to be missing (a survival task's
        follow-up) are left out of ``patients``, with the reason in ``excluded``.

    Raises
    ------
    WSIPipelineError
        On missing columns, duplicate slides, targets the task rejects (naming the column
        and the patients), or a patient whose slides disagree on a target or site.
    """
    task = _as_task(task)
    table = Path(table)
    try:
        frame = pd.read_csv(table, dtype={"patient_id": str, "slide_id": str, "slide_path": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise _fail(table, f"cannot read the cohort table: {error}", "give a comma-separated file with a header row") from None
    targets = list(task.target_columns)
    missing = [c for c in (*REQUIRED_COLUMNS, *targets) if c not in frame.columns]
    if missing:
        raise _fail(
            table,
            f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
            f"add the columns; the {task.name} task's target column(s) ({', '.join(targets)}) are set in the workflow's task section",
        )
    if frame.empty:
        raise _fail(table, "the cohort table has no rows", "list one slide per row")
    blank = frame["patient_id"].isna() | frame["slide_path"].isna()
    if blank.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(blank)[:5])
        raise _fail(table, f"empty patient_id or slide_path on line(s) {rows}", "fill in or delete those rows")

    root = Path(slide_root) if slide_root is not None else table.parent
    paths = [p if Path(p).is_absolute() else str((root / p).resolve()) for p in frame["slide_path"]]
    slide_ids = frame["slide_id"] if "slide_id" in frame.columns else [Path(p).stem for p in frame["slide_path"]]
    slides = pd.DataFrame(
        {
            "slide_id": [str(s) for s in slide_ids],
            "patient_id": frame["patient_id"].astype(str),
            "path": paths,
            "mpp": pd.to_numeric(frame["mpp"], errors="coerce") if "mpp" in frame.columns else np.nan,
        }
    )
    for column in ("slide_id", "path"):
        duplicated = slides[column][slides[column].duplicated()].unique()
        if len(duplicated):
            raise _fail(
                table,
                f"duplicate {column}: {', '.join(map(str, duplicated[:5]))}",
                f"each slide must appear once; remove or rename the duplicated {column} rows",
            )

    return cohort_from_frame(frame, slides, table, task, keep)


def cohort_from_frame(frame: pd.DataFrame, slides: pd.DataFrame, table: Path, task: Task, keep: Sequence[str] = ()) -> Cohort:
    """Check a table's per-slide targets, outcomes and sites and make the cohort.

    Parameters
    ----------
    frame
        The table's rows, one per slide (or bag), in the order of ``slides``; has ``patient_id``
        and the task's target columns.
    slides
        ``slide_id``, ``patient_id``, ``path``, ``mpp``, one row per slide (or bag).
    table
        The file the rows came from (named in errors).
    task
        The workflow's task, not yet bound.
    keep
        Further per-patient columns to keep (``scoring.subgroups``).

    Returns
    -------
    Cohort
        As :func:`load_cohort` returns it.
    """
    targets = list(task.target_columns)
    absent = [c for c in keep if c not in frame.columns]
    if absent:
        raise _fail(table, f"no column {', '.join(map(repr, absent))}, named in scoring.subgroups (found: "
                    f"{', '.join(map(str, frame.columns))})", "add the column (one value per patient), or remove it from scoring.subgroups")
    kept = [c for c in dict.fromkeys([*targets, *OUTCOME_COLUMNS, SITE_COLUMN, *keep]) if c in frame.columns]
    per_slide = pd.concat([slides[["patient_id"]], frame[kept].reset_index(drop=True)], axis=1)
    for column in OUTCOME_COLUMNS:
        if column in kept and column not in targets:
            per_slide[column] = pd.to_numeric(per_slide[column], errors="coerce")
    # Follow-up that is not the target is taken from the first slide that has it, as before.
    _check_one_value_per_patient(per_slide, [c for c in kept if c in targets or c == SITE_COLUMN or c in keep], table)
    patients = per_slide.groupby("patient_id", sort=False).first().reset_index()
    patients, excluded = _drop_missing_targets(patients, task)
    task = _checked(table, lambda: task.bind(patients))
    encoded = _checked(table, lambda: task.targets(patients))
    for column, values in task.decode_targets(encoded).items():
        patients[column] = values
    return Cohort(slides=slides, patients=patients.reset_index(drop=True), source=table, task=task, excluded=excluded)


def _checked(table: Path, read: Any) -> Any:
    """Run a task's check of the cohort, naming the table in its error."""
    try:
        return read()
    except WSIPipelineError as error:
        where = f"{table}: {error.where}" if error.where else str(table)
        raise WSIPipelineError(error.what, where=where, fix=error.fix) from None


def _check_one_value_per_patient(per_slide: pd.DataFrame, columns: list[str], table: Path) -> None:
    """A target or a site belongs to the patient: all of a patient's slides that give one must agree."""
    for column in columns:
        counts = per_slide[column].groupby(per_slide["patient_id"]).nunique()  # empty cells do not count
        conflicting = counts[counts > 1].index.tolist()
        if conflicting:
            raise _fail(
                table,
                f"patient(s) with slides of different labels: {', '.join(conflicting[:5])} (column '{column}')",
                f"'{column}' belongs to the patient: give all of a patient's slides the same value",
            )


def _drop_missing_targets(patients: pd.DataFrame, task: Task) -> tuple[pd.DataFrame, dict[str, str]]:
    """Leave out the patients without a target when the task allows it (survival without follow-up)."""
    if not task.optional_targets:
        return patients, {}
    from wsi_pipeline.mil.tasks.base import is_missing

    columns = list(task.target_columns)
    empty = np.zeros(len(patients), dtype=bool)
    for column in columns:
        empty |= is_missing(patients[column].to_numpy())
    excluded = {
        str(pid): f"no follow-up: {' or '.join(repr(c) for c in columns)} empty in the cohort table"
        for pid in patients.loc[empty, "patient_id"]
    }
    return patients.loc[~empty], excluded
