"""A run's cross-validation plan: planned from the patients with bags, written to ``folds.csv`` for audit.

:mod:`wsi_pipeline.mil.splits` makes the plan from ids and labels; this module applies it to
a run (the workflow's validation settings, the run's seed) and writes the table that says
which patient was fit, validation or test in which fold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.config.workflow import ValidationConfig
from wsi_pipeline.mil.splits import FoldPlan, plan_folds

#: The audit table's name in a run folder.
FOLDS_FILE = "folds.csv"
#: Its columns; ``role`` is ``fit``, ``val`` or ``test``.
FOLD_COLUMNS = ("fold", "patient_id", "role")


def plan_run_folds(labels: Mapping[str, int], validation: ValidationConfig, seed: int) -> list[FoldPlan]:
    """Plan patient-level cross-validation of the labelled patients.

    Parameters
    ----------
    labels
        Patient id -> 0/1, for the patients that have a bag.
    validation
        The workflow's ``validation`` section (folds, inner validation fraction).
    seed
        The run's seed.

    Returns
    -------
    list[FoldPlan]
        As :func:`~wsi_pipeline.mil.splits.plan_folds`, on the patients sorted by id, so the
        plan depends on who is in the cohort and not on the order they were listed in.

    Raises
    ------
    WSIPipelineError
        When the patients cannot be split (too few of a class for the folds, one class only).
    """
    patients = sorted(labels)
    return plan_folds(
        patients,
        [labels[p] for p in patients],
        n_folds=validation.n_folds,
        val_fraction=validation.val_fraction,
        seed=seed,
    )


def folds_frame(plans: Sequence[FoldPlan]) -> pd.DataFrame:
    """One row per (fold, patient): the patient's role in that fold.

    Parameters
    ----------
    plans
        The folds.

    Returns
    -------
    pandas.DataFrame
        Columns ``fold, patient_id, role``; by fold, then fit, val, test, each in plan order.
    """
    rows = [
        {"fold": plan.fold, "patient_id": patient, "role": role}
        for plan in plans
        for role, ids in (("fit", plan.fit_ids), ("val", plan.val_ids), ("test", plan.test_ids))
        for patient in ids
    ]
    return pd.DataFrame(rows, columns=list(FOLD_COLUMNS))


def write_folds(plans: Sequence[FoldPlan], path: str | os.PathLike[str]) -> Path:
    """Write :func:`folds_frame` as CSV, atomically (a reader never sees half a table).

    Parameters
    ----------
    plans
        The folds.
    path
        The CSV file, usually ``<run>/folds.csv``.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        folds_frame(plans).to_csv(tmp, index=False)
    return Path(path)
