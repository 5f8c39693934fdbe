"""Honest patient-level cross-validation plans.

The unit of splitting is the patient, never the slide or the tile: a patient's slides share
biology, staining and scanner, so a patient on both sides of a split inflates every metric.
Each outer fold's test patients are held out completely; the validation set used for early
stopping and model selection is carved out of that fold's *training* patients only, so no
decision about the model ever looks at test labels.

Plans are stratified on one discrete label per patient: the task's strata
(:meth:`~wsi_pipeline.mil.tasks.base.Task.stratify_labels`: the class, the event indicator, a
quantile bin of a regression target), optionally crossed with the patient's site for the
outer split. Repeated cross-validation runs ``n_repeats`` independent ``n_folds``-fold splits
of the same patients, each with its own seed (repeat 0 uses the run's seed itself, so one
repeat is exactly the plan of a single cross-validation).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from wsi_pipeline.errors import WSIPipelineError


class LeakageError(RuntimeError):
    """A split plan put one patient in two roles. This is a bug, never a user error."""


@dataclass(frozen=True)
class FoldPlan:
    """Which patients one outer fold fits on, selects the model on, and tests on.

    Attributes
    ----------
    fold
        Outer fold index, from 0 (within its repeat).
    fit_ids
        Patients whose bags the model is trained on.
    val_ids
        Inner validation patients (from the fold's training patients) for early stopping
        and model selection.
    test_ids
        The held-out patients of this fold; each patient is a test patient in exactly one
        fold of each repeat.
    repeat
        Which repetition of the cross-validation the fold belongs to, from 0.
    """

    fold: int
    fit_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    repeat: int = 0

    @property
    def name(self) -> str:
        """``fold<k>`` in the first repeat, ``repeat<r>-fold<k>`` in the others (task and item names)."""
        return f"fold{self.fold}" if self.repeat == 0 else f"repeat{self.repeat}-fold{self.fold}"

    @property
    def title(self) -> str:
        """``fold <k>``, or ``repeat <r> fold <k>`` after the first repeat (messages)."""
        return f"fold {self.fold}" if self.repeat == 0 else f"repeat {self.repeat} fold {self.fold}"

    @property
    def patients(self) -> tuple[str, ...]:
        """Every patient the fold touches: fit, then validation, then test (whose bags it needs)."""
        return self.fit_ids + self.val_ids + self.test_ids


def assert_disjoint(a: Iterable[str], b: Iterable[str], what: str) -> None:
    """Raise if two groups of patient ids share a patient.

    Parameters
    ----------
    a, b
        Patient ids of the two groups.
    what
        Names the two groups in the message, e.g. ``"fold 2 test vs fit"``.

    Raises
    ------
    LeakageError
        (a ``RuntimeError``) naming the shared patients, if any.
    """
    shared = set(a) & set(b)
    if shared:
        shown = ", ".join(map(str, sorted(shared, key=str)[:10]))
        more = f" and {len(shared) - 10} more" if len(shared) > 10 else ""
        raise LeakageError(f"patient leakage in {what}: {len(shared)} patient(s) in both groups: {shown}{more}")


def _min_per_class(n_folds: int) -> int:
    """Fewest patients a class needs for ``n_folds`` outer folds plus an inner fit/val split.

    Every outer test fold needs one patient of the class (stratification), and every
    fold's training part needs two (one to fit on, one to validate on).
    """
    count = n_folds
    # A stratified k-fold leaves count - ceil(count / k) patients of the class in training.
    while count - math.ceil(count / n_folds) < 2:
        count += 1
    return count


def _check_inputs(patient_ids: Sequence[str], y: np.ndarray, n_folds: int, val_fraction: float, seed: int) -> None:
    if len(patient_ids) != len(y):
        raise WSIPipelineError(
            f"{len(patient_ids)} patient ids but {len(y)} labels",
            where="cohort table",
            fix="give exactly one label per patient",
        )
    duplicates = sorted((p for p, n in Counter(patient_ids).items() if n > 1), key=str)
    if duplicates:
        raise WSIPipelineError(
            f"patient id(s) listed more than once: {', '.join(map(str, duplicates[:10]))}",
            where="cohort table",
            fix="give one row per patient (a patient's slides are pooled into one bag)",
        )
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise WSIPipelineError(f"n_folds must be an integer >= 2, got {n_folds!r}", where="n_folds", fix="set n_folds to 2 or more (5 is usual)")
    if not 0.0 < val_fraction < 1.0:
        raise WSIPipelineError(
            f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}",
            where="val_fraction",
            fix="set val_fraction to e.g. 0.2",
        )
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise WSIPipelineError(f"seed must be an integer in [0, 2**32), got {seed!r}", where="seed", fix="set seed to a non-negative integer")


def _check_class_counts(y: np.ndarray, n_folds: int, single_stratum_ok: bool = False) -> None:
    classes, counts = np.unique(y, return_counts=True)
    classes = classes.tolist()  # plain Python values read better in messages than np.int64(1)
    if len(y) == 0 or (len(classes) < 2 and not single_stratum_ok):
        raise WSIPipelineError(
            f"all {len(y)} patients have label {classes[0]!r}; cross-validation needs both classes" if len(y) else "no patients to split",
            where="cohort labels",
            fix="check the label column of the cohort table",
        )
    needed = _min_per_class(n_folds)
    fewest = int(counts.min())
    if fewest < needed:
        label = classes[int(counts.argmin())]
        feasible = [k for k in range(2, n_folds) if fewest >= _min_per_class(k)]
        summary = ", ".join(f"label {c!r}: {n}" for c, n in zip(classes, counts))
        fix = (
            f"set n_folds to {max(feasible)}, or add patients with label {label!r}"
            if feasible
            else f"add patients with label {label!r} (at least {_min_per_class(3)} are needed for 3 folds)"
        )
        raise WSIPipelineError(
            f"only {fewest} patient(s) with label {label!r} ({summary}; labels are the task's strata); "
            f"{n_folds}-fold cross-validation with an inner validation split needs at least {needed} patients of every stratum",
            where="n_folds",
            fix=fix,
        )


def _inner_split(train_idx: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Split one fold's training patients into fit and validation, stratified by class.

    Split each class separately rather than with ``train_test_split(stratify=...)``: with a
    rare class, sklearn's rounding may leave it out of a small validation set entirely,
    and a validation set with one class has no AUC and a lopsided loss.
    """
    fit_parts, val_parts = [], []
    for class_index, label in enumerate(np.unique(y[train_idx])):
        members = train_idx[y[train_idx] == label]
        # At least one validation and one fit patient per class; _check_class_counts made sure two exist.
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        random_state = int(np.random.SeedSequence([seed, fold, class_index]).generate_state(1)[0])
        fit_part, val_part = train_test_split(members, test_size=n_val, random_state=random_state)
        fit_parts.append(fit_part)
        val_parts.append(val_part)
    # Keep the cohort's order inside each group, so plans read naturally and compare easily.
    return np.sort(np.concatenate(fit_parts)), np.sort(np.concatenate(val_parts))


def _verify(plans: Sequence[FoldPlan], patient_ids: Sequence[str]) -> None:
    """Check the invariants of a plan, repeat by repeat; any failure is a bug, raised as :class:`LeakageError`.

    Within each repeat every patient is a test patient in exactly one fold; within each fold
    the fit, validation and test patients are disjoint and together the whole cohort.
    """
    everyone = set(patient_ids)
    for repeat in sorted({plan.repeat for plan in plans}):
        folds = [plan for plan in plans if plan.repeat == repeat]
        test_counts = Counter(p for plan in folds for p in plan.test_ids)
        repeated = sorted((p for p, n in test_counts.items() if n > 1), key=str)
        if repeated:
            raise LeakageError(f"repeat {repeat}: patient(s) in more than one test fold: {', '.join(map(str, repeated[:10]))}")
        missing = sorted(everyone - set(test_counts), key=str)
        if missing:
            raise LeakageError(f"repeat {repeat}: patient(s) in no test fold: {', '.join(map(str, missing[:10]))}")
        for plan in folds:
            assert_disjoint(plan.fit_ids, plan.val_ids, f"{plan.title} fit vs val")
            assert_disjoint(plan.fit_ids, plan.test_ids, f"{plan.title} fit vs test")
            assert_disjoint(plan.val_ids, plan.test_ids, f"{plan.title} val vs test")
            if set(plan.fit_ids) | set(plan.val_ids) | set(plan.test_ids) != everyone:
                raise LeakageError(f"{plan.title}: fit, val and test together do not cover the cohort exactly")


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of one repeat's split: the run's seed for repeat 0, a 32-bit hash of (seed, repeat) after."""
    if repeat == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0])


def _outer_labels(y: np.ndarray, sites: Sequence[str] | None) -> np.ndarray:
    """What the outer split stratifies on: the strata, crossed with the site when sites are given."""
    if sites is None:
        return y
    if len(sites) != len(y):
        raise WSIPipelineError(f"{len(sites)} sites but {len(y)} patients", where="cohort table", fix="give one site per patient")
    pairs = [f"{label}|{site}" for label, site in zip(y.tolist(), sites)]
    return np.unique(pairs, return_inverse=True)[1]


def _check_training_strata(train_idx: np.ndarray, y: np.ndarray, name: str) -> None:
    """A site-stratified split may leave a fold's training part short of a stratum: say so, as a user error."""
    for label in np.unique(y):
        n = int((y[train_idx] == label).sum())
        if n < 2:
            raise WSIPipelineError(
                f"{name}: stratifying by site leaves {n} training patient(s) with label {label.tolist()!r}; "
                "an inner fit/validation split needs two",
                where="validation.stratify_site",
                fix="set validation.stratify_site: false, use fewer folds, or add patients of that label",
            )


def plan_folds(
    patient_ids: Sequence[str],
    labels: Sequence[int],
    *,
    n_folds: int = 5,
    val_fraction: float = 0.2,
    seed: int = 0,
    n_repeats: int = 1,
    sites: Sequence[str] | None = None,
    single_stratum_ok: bool = False,
) -> list[FoldPlan]:
    """Plan repeated patient-level stratified k-fold cross-validation with inner validation splits.

    Parameters
    ----------
    patient_ids
        One id per patient, unique.
    labels
        The patients' strata (class labels, event indicators, target bins), in the same order.
    n_folds
        Number of outer folds; in each repeat every patient is a test patient in exactly one.
    val_fraction
        Fraction of each fold's training patients (per stratum, at least one) held out as the
        inner validation set for early stopping and model selection.
    seed
        Seeds the outer shuffle and the inner splits; the same inputs and seed give the same
        plan. Repeat ``r`` uses :func:`repeat_seed` ``(seed, r)``.
    n_repeats
        Independent repetitions of the ``n_folds``-fold split.
    sites
        One site per patient: the outer folds are then stratified by (stratum, site), so every
        fold tests patients of every site in proportion. The inner split stays stratified by
        stratum only.
    single_stratum_ok
        Accept labels with one stratum (a regression task with ``stratify_bins: 1``, a survival
        cohort with every event observed): the split is then a shuffled k-fold. By default one
        class is an error, as a classifier cannot be trained on it.

    Returns
    -------
    list[FoldPlan]
        One plan per (repeat, fold), ordered by repeat then fold. Within a plan, ids keep the
        input order.

    Raises
    ------
    WSIPipelineError
        For duplicate ids, mismatched lengths, bad settings, or a stratum with too few
        patients for ``n_folds`` (saying how many are needed and what to change).
    LeakageError
        If the resulting plan violates patient disjointness (a bug; never expected).
    """
    ids = list(patient_ids)
    y = np.asarray(labels)
    _check_inputs(ids, y, n_folds, val_fraction, seed)
    if not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise WSIPipelineError(f"n_repeats must be an integer >= 1, got {n_repeats!r}", where="validation.n_repeats",
                               fix="set n_repeats to 1 (one cross-validation) or more")
    _check_class_counts(y, int(n_folds), single_stratum_ok)
    outer_labels = _outer_labels(y, sites)

    plans = []
    for repeat in range(int(n_repeats)):
        split_seed = repeat_seed(int(seed), repeat)
        outer = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=split_seed)
        with warnings.catch_warnings():
            # (stratum, site) cells smaller than n_folds are spread as evenly as they can be.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splits = list(outer.split(np.zeros(len(y)), outer_labels))
        for fold, (train_idx, test_idx) in enumerate(splits):
            if sites is not None:
                _check_training_strata(train_idx, y, FoldPlan(fold, (), (), (), repeat).title)
            fit_idx, val_idx = _inner_split(train_idx, y, val_fraction, split_seed, fold)
            plans.append(
                FoldPlan(
                    fold=fold,
                    fit_ids=tuple(ids[i] for i in fit_idx),
                    val_ids=tuple(ids[i] for i in val_idx),
                    test_ids=tuple(ids[i] for i in np.sort(test_idx)),
                    repeat=repeat,
                )
            )
    _verify(plans, ids)
    return plans
