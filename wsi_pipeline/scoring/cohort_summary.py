"""The report's cohort summary: patients and slides given, scored, and excluded or failed -- each with its reason.

A run quietly smaller than its cohort misleads: a 12-patient cohort with two unreadable slides
must not read as "10 patients" with no word why. The engine knows what happened (the cohort
table, the run record's failed items and excluded patients); this module only holds those facts
(:class:`CohortSummary`, plain data, so scoring never imports the engine) and words them
against the predictions actually scored. A patient or slide given but neither scored nor
accounted for is listed too, as such: nothing drops out of the report silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from wsi_pipeline.scoring.predictions import REPEAT_COLUMN, SLIDE_COLUMN

#: Why a patient was given but not scored when the run recorded no reason (e.g. a score-only
#: run, whose record does not hold the failures of the run that tiled and trained).
NO_REASON = "not scored; no reason recorded by this run (see run.json of the run that trained)"


@dataclass(frozen=True)
class FailedItem:
    """One slide that failed in a stage, as the run record has it."""

    slide_id: str
    patient_id: str
    stage: str
    reason: str


@dataclass(frozen=True)
class CohortSummary:
    """What the cohort gave and what became of it.

    Attributes
    ----------
    slides
        ``(slide_id, patient_id)`` of every slide the cohort table lists, in its order.
    excluded
        Patient id -> why the patient was left out of training (no features, no target).
    failed
        Slides that failed in a stage (tile, extract, generate), with the reason.
    synthetic
        True when the cohort was generated (the manifest's ``cohort.synthetic``, or slides
        written by the synthetic generator): the report opens with a banner saying so.
    """

    slides: tuple[tuple[str, str], ...]
    excluded: dict[str, str] = field(default_factory=dict)
    failed: tuple[FailedItem, ...] = ()
    synthetic: bool = False

    @classmethod
    def from_run(
        cls,
        slides: pd.DataFrame,
        excluded: Mapping[str, str],
        failures: Iterable[tuple[str, str, str | None]],
        *,
        synthetic: bool = False,
    ) -> CohortSummary:
        """Build the summary from a cohort's slide table and a run's failures.

        Parameters
        ----------
        slides
            The cohort's slides (``slide_id``, ``patient_id`` columns).
        excluded
            Patient id -> reason (the run record's ``excluded_patients``).
        failures
            ``(stage, item, reason)`` of the run's failed items; items that are not slides of
            the cohort (a training fold) are not the cohort's and are left out.
        synthetic
            Whether the cohort was generated.

        Returns
        -------
        CohortSummary
            The facts, in the table's order.
        """
        pairs = tuple((str(s), str(p)) for s, p in zip(slides["slide_id"], slides["patient_id"], strict=True))
        patient_of = dict(pairs)
        failed, seen = [], set()
        for stage, item, reason in failures:
            if item in patient_of and item not in seen:  # a slide counts once, at its first failure
                seen.add(item)
                failed.append(FailedItem(item, patient_of[item], stage, reason or "no reason given"))
        return cls(pairs, {str(k): str(v) for k, v in excluded.items()}, tuple(failed), synthetic)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready facts (e.g. for a stage's freshness key)."""
        return {"slides": [list(s) for s in self.slides], "excluded": self.excluded,
                "failed": [vars(f) for f in self.failed], "synthetic": self.synthetic}


def cohort_lines(summary: CohortSummary, predictions: pd.DataFrame) -> list[str]:
    """The report's ``## Cohort`` section: counts given, scored and left out, then each patient or slide left out and why.

    Parameters
    ----------
    summary
        The run's cohort facts.
    predictions
        The validated predictions table scored (every model; the first repeat is counted).

    Returns
    -------
    list of str
        Markdown lines.
    """
    first = predictions
    if REPEAT_COLUMN in first and len(first):
        first = first[first[REPEAT_COLUMN] == first[REPEAT_COLUMN].min()]
    patients = list(dict.fromkeys(p for _, p in summary.slides))
    scored_patients = set(first["patient_id"].astype(str))
    failed = {f.slide_id: f for f in summary.failed}
    if SLIDE_COLUMN in first:
        scored_slides = set(first[SLIDE_COLUMN].astype(str))
    else:
        # Patient rows: a scored patient's slides count as scored unless they failed (their bag lacks them).
        scored_slides = {s for s, p in summary.slides if p in scored_patients and s not in failed}
    left_patients = [p for p in patients if p not in scored_patients]
    left_slides = [s for s, _ in summary.slides if s not in scored_slides]
    lines = ["## Cohort", ""]
    lines.append(f"- **given**: {len(patients)} patients, {len(summary.slides)} slides")
    lines.append(f"- **scored**: {len(scored_patients & set(patients))} patients, {len(scored_slides & {s for s, _ in summary.slides})} "
                 "slides")
    lines.append(f"- **excluded or failed**: {len(left_patients)} patients, {len(left_slides)} slides"
                 + (" (each listed below with its reason)" if left_patients or left_slides else ""))
    lines.append("")
    if failed:
        lines += ["Slides that failed (a patient keeps their other slides):", "",
                  "| Slide | Patient | Stage | Reason |", "|---|---|---|---|"]
        lines += [f"| {_cell(f.slide_id)} | {_cell(f.patient_id)} | {_cell(f.stage)} | {_cell(f.reason)} |" for f in summary.failed]
        lines.append("")
    if left_patients:
        lines += ["Patients not scored:", "", "| Patient | Reason |", "|---|---|"]
        for patient in left_patients:
            lines.append(f"| {_cell(patient)} | {_cell(_patient_reason(patient, summary, failed))} |")
        lines.append("")
    unaccounted = [s for s in left_slides if s not in failed and summary_patient(summary, s) in scored_patients]
    if unaccounted:
        lines += [f"Slides of scored patients without a score or a recorded failure: {', '.join(unaccounted)}.", ""]
    return lines


def summary_patient(summary: CohortSummary, slide_id: str) -> str | None:
    """The patient of a slide of the summary (None when it is not one)."""
    return dict(summary.slides).get(slide_id)


def _patient_reason(patient: str, summary: CohortSummary, failed: Mapping[str, FailedItem]) -> str:
    reason = summary.excluded.get(patient)
    slides = [f for f in failed.values() if f.patient_id == patient]
    if slides:
        shown = "; ".join(f"{f.slide_id} failed at {f.stage}" for f in slides)
        reason = f"{reason} ({shown})" if reason else f"every slide failed ({shown})"
    return reason or NO_REASON


def _cell(text: object) -> str:
    # A '|' inside a cell would split it; a newline would end the table row.
    return str(text).replace("|", "\\|").replace("\n", " ")
