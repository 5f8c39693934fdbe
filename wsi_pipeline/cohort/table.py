"""The cohort table: patients, their slides, labels and outcomes, checked on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_pipeline.errors import WSIPipelineError

REQUIRED_COLUMNS = ("patient_id", "slide_path")
OUTCOME_COLUMNS = ("pfs_months", "event")


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
    patients
        One row per patient: ``patient_id``, ``label`` (0/1), and ``pfs_months``/``event`` when given.
    source
        The table it came from.
    """

    slides: pd.DataFrame
    patients: pd.DataFrame
    source: Path

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
    def labels(self) -> dict[str, int]:
        """Patient id → label."""
        return dict(zip(self.patients["patient_id"], self.patients["label"].astype(int)))


def _fail(table: Path, what: str, fix: str) -> WSIPipelineError:
    return WSIPipelineError(what, where=str(table), fix=fix)


def load_cohort(table: str | Path, slide_root: str | Path | None = None, label_column: str = "label") -> Cohort:
    """Read and check a cohort CSV.

    Parameters
    ----------
    table
        CSV with ``patient_id``, ``slide_path`` and the label column; optional ``slide_id``
        (default: the file name without suffix), ``mpp`` (overrides the slide's µm/px),
        ``pfs_months`` and ``event``.
    slide_root
        Folder that relative slide paths start from (default: the table's folder).
    label_column
        Column holding the binary label (0/1).

    Returns
    -------
    Cohort
        Slides and patients. Missing slide files are *not* an error here: they fail alone in
        the run (and ``--dry-run`` lists them).

    Raises
    ------
    WSIPipelineError
        On missing columns, duplicate slides, non-binary labels, or a patient with two labels.
    """
    table = Path(table)
    try:
        frame = pd.read_csv(table, dtype={"patient_id": str, "slide_id": str, "slide_path": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise _fail(table, f"cannot read the cohort table: {error}", "give a comma-separated file with a header row") from None
    missing = [c for c in (*REQUIRED_COLUMNS, label_column) if c not in frame.columns]
    if missing:
        raise _fail(
            table,
            f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
            "add the columns; the label column is set by the workflow's task.label_column",
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

    labels = pd.to_numeric(frame[label_column], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        values = ", ".join(map(repr, frame.loc[bad, label_column].unique()[:5]))
        raise _fail(
            table,
            f"column '{label_column}' must hold 0 or 1; found {values}",
            "encode the binary label as 0 (negative) and 1 (positive)",
        )
    per_patient = pd.DataFrame({"patient_id": slides["patient_id"], "label": labels.astype(int)})
    for column in OUTCOME_COLUMNS:
        if column in frame.columns:
            per_patient[column] = pd.to_numeric(frame[column], errors="coerce")
    conflicting = per_patient.groupby("patient_id")["label"].nunique()
    conflicting = conflicting[conflicting > 1].index.tolist()
    if conflicting:
        raise _fail(
            table,
            f"patient(s) with slides of different labels: {', '.join(conflicting[:5])}",
            "a label belongs to the patient: give all of a patient's slides the same label",
        )
    patients = per_patient.groupby("patient_id", sort=False).first().reset_index()
    return Cohort(slides=slides, patients=patients, source=table)
