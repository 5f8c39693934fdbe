"""The cohort QC table of the tile stage (one row per slide, with flags) and its one-line summary."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsi_pipeline.atomic import atomic_path

#: The table's columns, in order (``flags`` last; keys of the rows not listed here come just
#: before ``flags``, in the order they first appear).
QC_TABLE_COLUMNS: tuple[str, ...] = (
    "slide_id",
    "slide_uid",
    "status",
    "reason",
    "slide_mpp",
    "target_mpp",
    "effective_mpp",
    "modality",
    "tissue_area_mm2",
    "pen_area_mm2",
    "n_grid_tiles",
    "n_kept",
    "dropped_tissue",
    "dropped_pen",
    "dropped_blur",
    "n_blurred",
    "median_blur",
    "flags",
)

#: Every flag, in the order it is written in ``flags``.
QC_FLAGS: tuple[str, ...] = ("failed", "no_tissue", "mostly_pen", "blurred", "tissue_area_outlier", "few_tiles")

_TEXT_COLUMNS = ("slide_id", "slide_uid", "status", "reason", "modality")
_FLOAT_COLUMNS = ("slide_mpp", "target_mpp", "effective_mpp", "tissue_area_mm2", "pen_area_mm2", "median_blur")
_COUNT_COLUMNS = ("n_grid_tiles", "n_kept", "dropped_tissue", "dropped_pen", "dropped_blur", "n_blurred")

#: Cohort rules (see :func:`qc_frame`).
MIN_COHORT = 5
BLURRED_FRACTION = 0.25
OUTLIER_Z = 3.5
OUTLIER_MIN_FACTOR = 2.0
FEW_TILES_FRACTION = 0.10
# 0.6745 = the standard normal's 75th percentile: it makes the MAD a consistent estimate of the
# standard deviation, so the robust z reads like an ordinary one (Iglewicz & Hoaglin, 1993).
_MAD_TO_SIGMA = 0.6745

_SUMMARY_MAX_NAMES = 10


def qc_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build the cohort QC table from the tile stage's per-slide rows, with QC flags.

    Parameters
    ----------
    rows
        One mapping per slide with the keys of :data:`QC_TABLE_COLUMNS` but ``flags``:
        ``slide_id``, ``slide_uid``, ``status`` (``"done"``, ``"skipped"`` or ``"failed"``),
        ``reason``, ``slide_mpp``, ``target_mpp``, ``effective_mpp``, ``modality``, ``tissue_area_mm2``,
        ``pen_area_mm2``, ``n_grid_tiles``, ``n_kept``, ``dropped_tissue``, ``dropped_pen``,
        ``dropped_blur``, ``n_blurred``, ``median_blur``. A missing key or ``None`` is an
        unknown value (typical of failed slides); other keys are kept as extra columns.

    Returns
    -------
    pandas.DataFrame
        One row per slide, columns in :data:`QC_TABLE_COLUMNS` order (extra keys just before
        ``flags``). Counts are nullable integers (``Int64``), measures floats (``NaN`` when
        unknown). ``flags`` is the ``;``-joined list of the flags below, ``""`` when none.

    Notes
    -----
    Flags are only computed from known values (an unknown value never raises a flag), and a
    failed slide gets ``failed`` alone. For the other slides:

    ``no_tissue``
        Tissue area is 0 or no tile was kept.
    ``mostly_pen``
        Pen area > tissue area, or more tiles dropped for pen than kept.
    ``blurred``
        ``n_blurred >= 25 %`` of the tiles that reached the blur test, ``n_kept + dropped_blur``
        (a missing ``dropped_blur`` counts as 0).
    ``tissue_area_outlier``
        Only when at least 5 non-failed slides have tissue area > 0, among them: with
        ``d = log(area) - median(log(area))`` and ``MAD = median(|d|)``, flag when the robust z
        ``0.6745 * d / MAD`` exceeds 3.5 in absolute value (Iglewicz & Hoaglin's rule; an
        infinite z when MAD is 0) **and** the area is more than 2 times above or below the
        median (``|d| > log 2``), so that a very uniform cohort does not flag a slide 20 %
        off its median. Logs, because tissue areas are skewed (biopsies next to resections).
    ``few_tiles``
        Only when at least 5 non-failed slides kept tiles: ``0 < n_kept < 10 %`` of their
        median ``n_kept``. A slide with no tile at all is ``no_tissue`` instead.
    """
    records = [dict(row) for row in rows]
    base = [column for column in QC_TABLE_COLUMNS if column != "flags"]
    extra = list(dict.fromkeys(key for record in records for key in record if key not in QC_TABLE_COLUMNS))
    frame = pd.DataFrame.from_records(records, columns=[*base, *extra]) if records else pd.DataFrame(columns=[*base, *extra])
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    for column in _FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    for column in _COUNT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["flags"] = _flags(frame)
    return frame.reset_index(drop=True)


def write_qc_table(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Write the QC table as CSV (UTF-8, no index) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")
    return Path(path)


def tiles_summary(frame: pd.DataFrame) -> str:
    """Return one line on the tiles kept per slide, for the end of the tile stage.

    For example ``tiles kept per slide: min 12, median 340, max 1,204 (48 slides); no tiles:
    s07, s19; failed: s03``. Failed slides are left out of min/median/max and listed on their
    own; slides that kept no tile are named (``all slides have tiles`` otherwise). Name lists
    stop after 10 slides (``... and 4 more``).

    Parameters
    ----------
    frame
        A table from :func:`qc_frame` (needs ``slide_id``, ``status`` and ``n_kept``).

    Returns
    -------
    str
        The summary line.
    """
    failed = (frame["status"] == "failed").to_numpy(dtype=bool)
    kept = _numbers(frame, "n_kept")
    tiled = ~failed & np.isfinite(kept)
    ids = frame["slide_id"].astype(str).to_numpy()
    if tiled.any():
        values = kept[tiled]
        parts = [
            (f"tiles kept per slide: min {values.min():,.0f}, median {_number(float(np.median(values)))}, "
            f"max {values.max():,.0f} ({tiled.sum()} slide{'s' if tiled.sum() != 1 else ''})")
        ]
        empty = tiled & (kept == 0)
        parts.append(f"no tiles: {_names(ids[empty])}" if empty.any() else "all slides have tiles")
    else:
        parts = ["tiles kept per slide: no slide tiled"]
    if failed.any():
        parts.append(f"failed: {_names(ids[failed])}")
    return "; ".join(parts)


def _flags(frame: pd.DataFrame) -> list[str]:
    """Return the ``;``-joined flags of each row (see :func:`qc_frame`)."""
    failed = (frame["status"] == "failed").to_numpy(dtype=bool)
    active = ~failed
    tissue = _numbers(frame, "tissue_area_mm2")
    pen = _numbers(frame, "pen_area_mm2")
    kept = _numbers(frame, "n_kept")
    dropped_pen = _numbers(frame, "dropped_pen")
    dropped_blur = np.nan_to_num(_numbers(frame, "dropped_blur"), nan=0.0)
    n_blurred = _numbers(frame, "n_blurred")
    # NaN compares False everywhere below: an unknown value never raises a flag.
    with np.errstate(invalid="ignore"):
        considered = kept + dropped_blur
        flags = {
            "failed": failed,
            "no_tissue": active & ((tissue == 0) | (kept == 0)),
            "mostly_pen": active & ((pen > tissue) | (dropped_pen > kept)),
            "blurred": active & (considered > 0) & (n_blurred >= BLURRED_FRACTION * considered),
            "tissue_area_outlier": _area_outliers(tissue, active),
            "few_tiles": _few_tiles(kept, active),
        }
    return [";".join(name for name in QC_FLAGS if flags[name][i]) for i in range(len(frame))]


def _area_outliers(area: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Return the robust log-area outliers among active slides with tissue (see :func:`qc_frame`)."""
    with np.errstate(invalid="ignore"):
        cohort = active & np.isfinite(area) & (area > 0)
    out = np.zeros(len(area), dtype=bool)
    if cohort.sum() < MIN_COHORT:
        return out
    log_area = np.log(area[cohort])
    deviation = log_area - np.median(log_area)
    mad = float(np.median(np.abs(deviation)))
    if mad > 0:
        z = _MAD_TO_SIGMA * deviation / mad
    else:  # over half the cohort has the median area exactly: any other area is infinitely far
        z = np.where(deviation == 0, 0.0, np.inf)
    out[cohort] = (np.abs(z) > OUTLIER_Z) & (np.abs(deviation) > np.log(OUTLIER_MIN_FACTOR))
    return out


def _few_tiles(kept: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Return the slides keeping under 10 % of the cohort's median tile count (see :func:`qc_frame`)."""
    with np.errstate(invalid="ignore"):
        cohort = active & np.isfinite(kept) & (kept > 0)
    out = np.zeros(len(kept), dtype=bool)
    if cohort.sum() < MIN_COHORT:
        return out
    out[cohort] = kept[cohort] < FEW_TILES_FRACTION * float(np.median(kept[cohort]))
    return out


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Return a column as float64 with NaN for unknown values (works for ``Int64`` columns too)."""
    return pd.to_numeric(frame[column], errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _number(value: float) -> str:
    """Format a count, or a median halfway between two counts, with thousands separators."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _names(ids: Sequence[str] | np.ndarray) -> str:
    """Return up to 10 slide ids, comma-separated, then how many more there are."""
    ids = list(ids)
    shown = ", ".join(ids[:_SUMMARY_MAX_NAMES])
    rest = len(ids) - _SUMMARY_MAX_NAMES
    return f"{shown} and {rest} more" if rest > 0 else shown
