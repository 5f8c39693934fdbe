"""Bags whose features were computed elsewhere: an instance table, or a folder of ``.h5`` files.

Two sources besides the feature store (the manifest's ``cohort.instances`` and
``cohort.h5_dir`` + ``cohort.table``), each giving the cohort and a :class:`BagSource` that
training tasks read their fold's bags from, by path:

- an **instance table** (CSV, or Parquet by its ``.parquet``/``.pq`` suffix): one row per
  instance, columns ``bag_id``, the task's target columns, optional ``patient_id`` (default:
  the bag id) and ``site``, and every other column a numeric feature. A patient's bags are
  concatenated into the patient's bag, as a patient's slides are.
- a **folder of CLAM / TRIDENT .h5 files** (dataset ``features`` (N, D), optional ``coords``)
  with a label table: ``patient_id``, ``slide_id`` (the file's stem; or ``slide_path``, whose
  stem is used) and the task's target columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from wsi_pipeline.cohort.table import (
    OUTCOME_COLUMNS,
    SITE_COLUMN,
    Cohort,
    _as_task,
    cohort_from_frame,
)
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.cohort_bags import BagSource, PatientSlides

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: Suffixes read as Parquet; anything else is read as CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")


class ExternalBags(NamedTuple):
    """A cohort whose features come with it, and where training reads them.

    Attributes
    ----------
    cohort
        The cohort (slides are the bags or ``.h5`` files; patients with their targets).
    source
        The bag source training tasks load from.
    notes
        One line per patient trained on fewer slides than the table lists.
    """

    cohort: Cohort
    source: BagSource
    notes: list[str]


def file_stamp(path: str | Path) -> tuple[int, int]:
    """(size, modification time in ns) of a file: changes when the file is rewritten."""
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet table (by suffix), ids as text.

    Raises
    ------
    WSIPipelineError
        When the file cannot be read.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path, columns=columns)
        else:
            frame = pd.read_csv(path, usecols=columns, dtype={"bag_id": str, "patient_id": str, "slide_id": str})
    except ImportError:
        raise WSIPipelineError(
            "reading Parquet needs pyarrow, which is not installed",
            where=str(path),
            fix="pip install 'wsi-pipeline[parquet]' (or pyarrow), or give the table as CSV",
        ) from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise WSIPipelineError(
            f"cannot read the table: {error}",
            where=str(path),
            fix="give a comma-separated file with a header row, or a Parquet file named *.parquet",
        ) from None
    for column in ("bag_id", "patient_id", "slide_id"):
        if column in frame.columns:
            frame[column] = frame[column].astype(str)
    return frame


# -- instance tables --------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceTableBags(BagSource):
    """Bags read from the rows of an instance table.

    Attributes
    ----------
    path
        The table (CSV or Parquet).
    feature_columns
        The columns that are features, in table order.
    stamp
        The file's (size, mtime in ns) when the run read it.
    """

    path: str = ""
    feature_columns: tuple[str, ...] = ()
    stamp: tuple[int, int] = (0, 0)

    @property
    def features_id(self) -> str:
        """``instances:<file name>``."""
        return f"instances:{Path(self.path).name}"

    def fingerprint(self) -> dict[str, Any]:
        """The bags, the file, its stamp and the feature columns."""
        return {"bags": self.patient_slides, "instances": self.path, "stamp": self.stamp, "columns": self.feature_columns}

    def load_parts(self, patients: Iterable[str]) -> dict[str, list[np.ndarray]]:
        """(N_i, D) float32 instances of each of the patient's bags, in table order."""
        wanted = set(patients)
        frame = read_table(self.path, columns=["bag_id", *self.feature_columns])
        values = frame[list(self.feature_columns)].to_numpy(dtype=np.float32)
        rows = frame.groupby("bag_id", sort=False).indices
        return {
            patient: [values[rows[bag]] for bag in bags]
            for patient, bags in self.patient_slides
            if patient in wanted
        }

    def nbytes(self) -> int:
        """Rows of the listed bags × feature columns × 4 bytes (float32), counted from the ``bag_id`` column."""
        listed = {bag for _, bags in self.patient_slides for bag in bags}
        counts = read_table(self.path, columns=["bag_id"])["bag_id"].value_counts()
        return int(counts[counts.index.isin(listed)].sum()) * len(self.feature_columns) * 4


def instance_feature_columns(frame: pd.DataFrame, task: Task, path: Path, keep: Sequence[str] = ()) -> tuple[str, ...]:
    """The feature columns of an instance table: every column but ids, targets, site, follow-up and ``keep`` (subgroups).

    Raises
    ------
    WSIPipelineError
        When an extra column is not numeric, or no column is left.
    """
    reserved = {"bag_id", "patient_id", SITE_COLUMN, *OUTCOME_COLUMNS, *task.target_columns, *keep}
    extra = [c for c in frame.columns if c not in reserved]
    bad = [str(c) for c in extra if not is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c])]
    if bad:
        raise WSIPipelineError(
            f"non-numeric column(s) {', '.join(bad[:10])}: every column other than bag_id, patient_id, site and the "
            f"{task.name} task's target column(s) ({', '.join(task.target_columns)}) is read as a feature",
            where=str(path),
            fix="drop those columns, or make them numbers (a column of ids goes in bag_id or patient_id)",
        )
    if not extra:
        raise WSIPipelineError(
            "no feature columns", where=str(path), fix="add the instances' numeric features as columns besides bag_id and the targets"
        )
    return tuple(str(c) for c in extra)


def load_instance_table(path: str | Path, task: Task | str | None = None, keep: Sequence[str] = ()) -> ExternalBags:
    """Read an instance table into a cohort and the bag source training reads it through.

    Parameters
    ----------
    path
        CSV or Parquet, one row per instance (see the module docstring).
    task
        The workflow's task (built, not bound); as :func:`~wsi_pipeline.cohort.table.load_cohort`.
    keep
        Per-patient columns kept for scoring (``scoring.subgroups``); never read as features.

    Returns
    -------
    ExternalBags
        The cohort (one "slide" per bag, path = the table), an :class:`InstanceTableBags`.

    Raises
    ------
    WSIPipelineError
        On missing columns, non-numeric extra columns, a bag whose rows disagree on a target
        or its patient, or targets the task rejects.
    """
    task = _as_task(task)
    path = Path(path)
    frame = read_table(path)
    targets = list(task.target_columns)
    missing = [c for c in ("bag_id", *targets) if c not in frame.columns]
    if missing:
        raise WSIPipelineError(
            f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
            where=str(path),
            fix=f"an instance table needs bag_id and the {task.name} task's target column(s) ({', '.join(targets)})",
        )
    if frame.empty:
        raise WSIPipelineError("the instance table has no rows", where=str(path), fix="list one instance per row")
    if "patient_id" not in frame.columns:
        frame["patient_id"] = frame["bag_id"]
    columns = instance_feature_columns(frame, task, path, keep)
    per_bag = [c for c in ("patient_id", *targets, SITE_COLUMN, *keep) if c in frame.columns]
    for column in per_bag:
        counts = frame[column].groupby(frame["bag_id"]).nunique()
        conflicting = counts[counts > 1].index.tolist()
        if conflicting:
            raise WSIPipelineError(
                f"bag(s) whose rows have different values of '{column}': {', '.join(map(str, conflicting[:5]))}",
                where=str(path),
                fix=f"'{column}' belongs to the bag: give all the rows of a bag the same value",
            )
    bags = frame.drop(columns=list(columns)).groupby("bag_id", sort=False).first().reset_index()
    slides = pd.DataFrame(
        {"slide_id": bags["bag_id"], "patient_id": bags["patient_id"], "path": str(path.resolve()), "mpp": np.nan}
    )
    cohort = cohort_from_frame(bags, slides, path, task, keep)
    kept = set(cohort.patients["patient_id"])
    patient_bags = tuple(
        (str(patient), tuple(group["bag_id"])) for patient, group in bags.groupby("patient_id", sort=True) if patient in kept
    )
    source = InstanceTableBags(patient_bags, str(path.resolve()), columns, file_stamp(path))
    return ExternalBags(cohort, source, [])


# -- folders of .h5 files ---------------------------------------------------------------------------
@dataclass(frozen=True)
class H5Bags(BagSource):
    """Bags read from CLAM / TRIDENT ``.h5`` files, one per slide (``patient_slides`` holds their paths).

    Attributes
    ----------
    folder
        The folder the files were found in.
    stamps
        Each file's (size, mtime in ns) when the run listed it, in ``patient_slides`` order.
    """

    folder: str = ""
    stamps: tuple[tuple[int, int], ...] = ()

    @property
    def features_id(self) -> str:
        """``h5:<folder name>``."""
        return f"h5:{Path(self.folder).name}"

    def fingerprint(self) -> dict[str, Any]:
        """The files per patient and their stamps."""
        return {"bags": self.patient_slides, "h5_dir": self.folder, "stamps": self.stamps}

    def slide_names(self) -> PatientSlides:
        """The files' stems: the label table's ``slide_id`` each file was matched by."""
        return tuple((patient, tuple(Path(file).stem for file in files)) for patient, files in self.patient_slides)

    def load_parts(self, patients: Iterable[str]) -> dict[str, list[np.ndarray]]:
        """Each patient's files' ``features``, in the table's slide order."""
        from wsi_pipeline.store.h5_io import read_h5_features

        wanted = set(patients)
        return {
            patient: [read_h5_features(file) for file in files]
            for patient, files in self.patient_slides
            if patient in wanted
        }

    def nbytes(self) -> int:
        """Every file's ``features`` size as stored, from the datasets' shapes (nothing read)."""
        import h5py

        total = 0
        for _, files in self.patient_slides:
            for file in files:
                try:
                    with h5py.File(file, "r") as h5:
                        total += int(h5["features"].size * h5["features"].dtype.itemsize)
                except (OSError, KeyError):
                    continue  # reading the file names what is wrong with it
        return total


def load_h5_cohort(h5_dir: str | Path, table: str | Path, task: Task | str | None = None, keep: Sequence[str] = ()) -> ExternalBags:
    """Match a label table's slides to the ``.h5`` files of a folder (by file stem).

    Parameters
    ----------
    h5_dir
        Folder searched (recursively) for ``*.h5``.
    table
        CSV or Parquet: ``patient_id``, ``slide_id`` (or ``slide_path``: its stem is used), the
        task's target columns, optional ``site``.
    task
        The workflow's task (built, not bound).
    keep
        Per-patient columns kept for scoring (``scoring.subgroups``).

    Returns
    -------
    ExternalBags
        Patients with no file are excluded (with the reason); those missing some files are
        trained on the others (with a note).
    """
    task = _as_task(task)
    folder, table = Path(h5_dir), Path(table)
    frame = read_table(table)
    if "slide_id" not in frame.columns and "slide_path" in frame.columns:
        frame["slide_id"] = [Path(str(p)).stem for p in frame["slide_path"]]
    targets = list(task.target_columns)
    missing = [c for c in ("patient_id", "slide_id", *targets) if c not in frame.columns]
    if missing:
        raise WSIPipelineError(
            f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
            where=str(table),
            fix=f"a label table for h5_dir needs patient_id, slide_id (the .h5 file's stem) and the {task.name} task's "
            f"target column(s) ({', '.join(targets)})",
        )
    files: dict[str, Path] = {}
    for file in sorted(folder.rglob("*.h5")):
        if file.stem in files:
            raise WSIPipelineError(
                f"two files named {file.name}: {files[file.stem]} and {file}",
                where=str(folder),
                fix="slides are matched to files by name: keep one file per slide",
            )
        files[file.stem] = file.resolve()
    if not files:
        raise WSIPipelineError("no .h5 file in this folder", where=str(folder), fix="point cohort.h5_dir at the folder of feature files")
    slides = pd.DataFrame(
        {
            "slide_id": frame["slide_id"].astype(str),
            "patient_id": frame["patient_id"].astype(str),
            "path": [str(files.get(s, "")) for s in frame["slide_id"].astype(str)],
            "mpp": np.nan,
        }
    )
    duplicated = slides["slide_id"][slides["slide_id"].duplicated()].unique()
    if len(duplicated):
        raise WSIPipelineError(
            f"duplicate slide_id: {', '.join(duplicated[:5])}", where=str(table), fix="each slide must appear once"
        )
    cohort = cohort_from_frame(frame, slides, table, task, keep)
    kept = set(cohort.patients["patient_id"])
    patient_files, notes, excluded = [], [], dict(cohort.excluded)
    for patient, group in slides.groupby("patient_id", sort=True):
        if patient not in kept:
            continue
        present = [s for s in group["slide_id"] if s in files]
        absent = [s for s in group["slide_id"] if s not in files]
        if not present:
            excluded[patient] = f"no .h5 file in {folder} for slide(s) {', '.join(absent)}"
            continue
        if absent:
            notes.append(f"patient {patient}: trained without slide(s) {', '.join(absent)} (no .h5 file)")
        patient_files.append((patient, tuple(str(files[s]) for s in present)))
    stamps = tuple(file_stamp(f) for _, group in patient_files for f in group)
    source = H5Bags(tuple(patient_files), str(folder.resolve()), stamps)
    cohort = Cohort(slides=cohort.slides, patients=cohort.patients, source=table, task=cohort.task, excluded=excluded)
    return ExternalBags(cohort, source, notes)
