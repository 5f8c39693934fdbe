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
FOLD_COLUMNS = ("repeat", "fold", "patient_id", "role")


def plan_run_folds(
    labels: Mapping[str, int],
    validation: ValidationConfig,
    seed: int,
    sites: Mapping[str, str] | None = None,
) -> list[FoldPlan]:
    """Plan repeated patient-level cross-validation of the patients with a bag.

    Parameters
    ----------
    labels
        Patient id -> stratum (the task's :meth:`~wsi_pipeline.mil.tasks.base.Task.stratify_labels`),
        for the patients that have a bag.
    validation
        The workflow's ``validation`` section (folds, repeats, inner validation fraction,
        whether to stratify by site).
    seed
        The run's seed.
    sites
        Patient id -> site, from the cohort table's ``site`` column; used only with
        ``validation.stratify_site``.

    Returns
    -------
    list[FoldPlan]
        As :func:`~wsi_pipeline.mil.splits.plan_folds`, on the patients sorted by id, so the
        plan depends on who is in the cohort and not on the order they were listed in.
        One stratum only is accepted (a shuffled k-fold): whether the task can learn from it
        is the task's to say (``task.fit``).

    Raises
    ------
    WSIPipelineError
        When the patients cannot be split (too few of a stratum for the folds).
    """
    patients = sorted(labels)
    by_site = sites is not None and validation.stratify_site
    return plan_folds(
        patients,
        [labels[p] for p in patients],
        n_folds=validation.n_folds,
        val_fraction=validation.val_fraction,
        seed=seed,
        n_repeats=validation.n_repeats,
        sites=[str(sites[p]) for p in patients] if by_site else None,
        single_stratum_ok=True,
    )


def folds_frame(plans: Sequence[FoldPlan]) -> pd.DataFrame:
    """One row per (repeat, fold, patient): the patient's role in that fold.

    Parameters
    ----------
    plans
        The folds.

    Returns
    -------
    pandas.DataFrame
        Columns ``repeat, fold, patient_id, role``; by repeat and fold, then fit, val, test,
        each in plan order.
    """
    rows = [
        {"repeat": plan.repeat, "fold": plan.fold, "patient_id": patient, "role": role}
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
