"""The run's model comparisons: each model against the mean-pool baseline (or every pair), and each binary AUC's permutation p.

The score stage of ``wsi-pipeline run`` scores several aggregators on the same patients; their
differences are tested on those patients together, with the functions standalone scoring and
``wsi-pipeline compare`` use (no second implementation here):

- **binary, one repeat**: :func:`~wsi_pipeline.scoring.comparison.compare_models` on the rows
  both models scored -- DeLong's test of the AUC difference (one row per patient only) and the
  paired patient bootstrap of it, exactly as standalone scoring computes them;
- **otherwise** (several repeats, or a multiclass, survival or regression task):
  :func:`~wsi_pipeline.scoring.paired.paired_metric_test` of the task's headline metric, a paired
  bootstrap whose statistic is the metric averaged over the repeats (one draw of patients for
  both models and every repeat, a patient with all their slides).

Both give the same bootstrap on the same rows (same draws for the same seed and patients), so a
run's numbers do not depend on which route computed them. The pairs are those of
:func:`~wsi_pipeline.scoring.comparison.comparison_pairs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsi_pipeline.scoring.comparison import compare_models, comparison_pairs
from wsi_pipeline.scoring.paired import paired_metric_test
from wsi_pipeline.scoring.permutation import auc_permutation_p
from wsi_pipeline.scoring.predictions import REPEAT_COLUMN, SLIDE_COLUMN, unit_columns

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: metrics.json's key of the comparisons (a list, beside the models' entries).
COMPARISONS_KEY = "comparisons"


def run_comparisons(
    table: pd.DataFrame,
    task: Task,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Paired tests of the task's headline metric between the models of a validated predictions table.

    Parameters
    ----------
    table
        A validated predictions table (:func:`~wsi_pipeline.scoring.predictions.validate_predictions`),
        every model and repeat.
    task
        The task scored; its first metric (``task.metric_names[0]``) is compared.
    n_resamples, level, seed
        The paired bootstrap and the level of the difference's interval.

    Returns
    -------
    comparisons
        One entry per pair: ``{"model", "reference", "metric", "n_patients", "difference":
        {"value", "ci_low", "ci_high", "p_value", "n_resamples"} (paired bootstrap of
        metric(model) - metric(reference)), "delong": {"z", "p_value", "se", "ci_low",
        "ci_high"} or None}``; a pair that cannot be tested has ``"refused"`` (why) instead of
        ``difference``.
    notes
        Why a DeLong test or a comparison was not computed, for the report.
    """
    metric = task.metric_names[0]
    models = sorted(table["model"].unique())
    by_model = {model: rows for model, rows in table.groupby("model", sort=True)}
    comparisons: list[dict[str, Any]] = []
    notes: list[str] = []
    for a, b in comparison_pairs(models):
        entry: dict[str, Any] = {"model": a, "reference": b, "metric": metric}
        n_repeats = max(by_model[a][REPEAT_COLUMN].nunique(), by_model[b][REPEAT_COLUMN].nunique())
        if task.name == "binary" and metric == "auc" and n_repeats == 1:
            entry.update(_binary_one_repeat(by_model[a], by_model[b], task, n_resamples, level, seed))
            if entry["delong"] is None:
                notes.append(f"{a} vs {b}: DeLong's test not computed ("
                             + ("several rows per patient; the paired bootstrap draws patients)" if SLIDE_COLUMN in table
                                else "fewer than two patients of a class)"))
        else:
            result = paired_metric_test(by_model[a], by_model[b], task, task, metric, n_resamples=n_resamples, level=level,
                                        seed=seed)
            entry["n_patients"] = result.n_patients
            if result.refused:
                entry["refused"] = result.refused
                notes.append(f"{a} vs {b}: not compared: {result.refused}.")
            else:
                entry["difference"] = {**(result.difference or {}), "p_value": result.bootstrap_p, "n_resamples": n_resamples}
            entry["delong"] = None
            if task.name == "binary" and n_repeats > 1:
                notes.append(f"{a} vs {b}: DeLong's test not computed (the AUC is a mean over {n_repeats} repeats; "
                             "the paired bootstrap draws patients for every repeat at once)")
        comparisons.append(entry)
    return comparisons, notes


def _binary_one_repeat(a: pd.DataFrame, b: pd.DataFrame, task: Task, n_resamples: int, level: float, seed: int) -> dict[str, Any]:
    """compare_models on the units both models scored, in sorted order (as paired_metric_test aligns them)."""
    units = unit_columns(a)
    label = task.target_columns[0]
    joined = a[[*units, label, "score"]].merge(b[[*units, "score"]], on=units, suffixes=("_a", "_b")).sort_values(units)
    groups = joined["patient_id"].to_numpy() if SLIDE_COLUMN in units else None
    result = compare_models(joined[label].to_numpy(), joined["score_a"].to_numpy(), joined["score_b"].to_numpy(),
                            groups=groups, n_resamples=n_resamples, level=level, seed=seed)
    return {"n_patients": result["n_patients"], "difference": result["auc_difference"], "delong": result["delong"]}


def permutation_entry(rows: pd.DataFrame, task: Task, *, n_permutations: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A binary model's label-permutation p of its AUC (:func:`~wsi_pipeline.scoring.permutation.auc_permutation_p`).

    Parameters
    ----------
    rows
        One model's rows of a validated binary predictions table, all repeats.
    task
        The binary task (its label column).
    n_permutations, seed
        Label shuffles and their seed (the same for every repeat).

    Returns
    -------
    dict
        ``{"auc_permutation_p", "n_permutations"}``: with several repeats the p is the median
        over repeats (each repeat's AUC tested on its own; the labels are the same in every
        repeat) and ``auc_permutation_p_per_repeat`` lists them. None where undefined (one class).
    """
    label = task.target_columns[0]
    slide_level = SLIDE_COLUMN in rows
    values = []
    for _, group in rows.groupby(REPEAT_COLUMN, sort=True):
        groups = group["patient_id"].to_numpy() if slide_level else None
        values.append(auc_permutation_p(group[label].to_numpy(dtype=np.float64), group["score"].to_numpy(dtype=np.float64),
                                        groups=groups, n_permutations=n_permutations, seed=seed))
    finite = [v for v in values if math.isfinite(v)]
    entry: dict[str, Any] = {
        "auc_permutation_p": float(np.median(finite)) if finite and len(finite) == len(values) else None,
        "n_permutations": n_permutations,
    }
    if len(values) > 1:
        entry["auc_permutation_p_per_repeat"] = [v if math.isfinite(v) else None for v in values]
    return entry


def comparison_table(
    comparisons: Sequence[Mapping[str, Any]], metric_label: str, ci: str, metrics: Mapping[str, Any] | None = None
) -> list[str]:
    """The report's Markdown table of the comparisons, and each binary model's permutation p (empty without either).

    Parameters
    ----------
    comparisons
        The entries of :func:`run_comparisons`.
    metric_label
        How the report names the compared metric (e.g. ``AUC``).
    ci
        The interval's header text (e.g. ``95% CI``).
    metrics
        Model -> metrics.json entry; those with ``auc_permutation_p`` are listed under the table.

    Returns
    -------
    list of str
        A heading, a sentence, a pipe table and the permutation p-values.
    """
    from wsi_pipeline.scoring.formatting import format_interval, format_p

    permuted = {m: e for m, e in (metrics or {}).items() if isinstance(e, Mapping) and "auc_permutation_p" in e}
    if not comparisons and not permuted:
        return []
    lines = ["### Comparisons", ""]
    if permuted:
        shown = ", ".join(f"{m} {format_p(e['auc_permutation_p'])}" for m, e in permuted.items())
        n = next(iter(permuted.values()))["n_permutations"]
        over_repeats = ", median over repeats" if any("auc_permutation_p_per_repeat" in e for e in permuted.values()) else ""
        sentence = (f"Label-permutation p of each model's AUC (one-sided, AUC > 0.5; {n} permutations of the labels among "
                    f"patients{over_repeats}): {shown}.")
        lines += [sentence, ""]
    if not comparisons:
        return lines
    lines += [
        f"Each model against the mean-pool baseline when it was trained (else every pair), on the patients both scored: "
        f"the difference in {metric_label} with its paired patient-bootstrap interval and two-sided p"
        + (", and DeLong's test of the AUC difference (one repeat, one row per patient)." if any(c.get("delong") for c in comparisons)
           else "."), "",
        f"| Model | Reference | Patients | {metric_label} difference [{ci}] | Bootstrap p | DeLong p |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        if "refused" in c:
            difference, p = f"not compared: {c['refused']}", "n/a"
        else:
            difference, p = format_interval(c["difference"]), format_p(c["difference"].get("p_value"))
        delong = format_p(c["delong"]["p_value"]) if c.get("delong") else "n/a"
        cells = [c["model"], c["reference"], str(c["n_patients"]), difference, p, delong]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return [*lines, ""]
