"""The report's sections on what metrics.json holds beyond the results table: per class, survival groups, subgroups.

Lines of Markdown, in the subset the HTML report reads (headings, pipe tables, images,
paragraphs), so ``report.html`` shows them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_pipeline.scoring.formatting import format_interval
from wsi_pipeline.scoring.layout import PLOTS_DIR, confusion_plot_name
from wsi_pipeline.scoring.multiclass_metrics import CONFUSION_KEY
from wsi_pipeline.scoring.subgroups import SUBGROUPS_KEY
from wsi_pipeline.scoring.survival_metrics import RISK_GROUPS_KEY
from wsi_pipeline.scoring.time_auc import TIME_AUC_PREFIX

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows), ""]


def task_sections(metrics: Mapping[str, Mapping[str, Any]], task: Task, out: Path, ci: str) -> list[str]:
    """The report's per-class, survival-group and subgroup sections (empty when metrics.json has none).

    Parameters
    ----------
    metrics
        metrics.json's content (model -> entries).
    task
        The task scored (its metric labels).
    out
        The scoring folder (plots are looked up in ``out/plots``).
    ci
        How intervals are headed, e.g. ``95% CI``.
    """
    return [*_per_class(metrics, out, ci), *_survival(metrics, ci), *_subgroups(metrics, task, ci)]


def _per_class(metrics: Mapping[str, Mapping[str, Any]], out: Path, ci: str) -> list[str]:
    lines: list[str] = []
    for model, entry in metrics.items():
        if CONFUSION_KEY not in entry:
            continue
        if not lines:
            lines += ["## Per class", "",
                      ("Precision, recall, F1 and one-vs-rest AUC of each class, with patient-bootstrap intervals like the "
                      "table above; support is the number of scored rows of the class. The confusion matrices (counts and "
                      "row-normalised) are of the first repeat."), ""]
        confusion = entry[CONFUSION_KEY]
        support = [sum(row) for row in confusion["counts"]]
        rows = [[_cell(c), str(n), *(format_interval(entry[f"{m}_{c}"]) for m in ("precision", "recall", "f1", "auc"))]
                for c, n in zip(confusion["classes"], support)]
        lines += [f"### {_cell(model)}", ""]
        lines += _table(["Class", "Support", f"Precision [{ci}]", f"Recall [{ci}]", f"F1 [{ci}]", f"AUC one-vs-rest [{ci}]"], rows)
        name = confusion_plot_name(model)
        if (out / PLOTS_DIR / name).is_file():
            lines += [f"![Confusion matrices of {_cell(model)}]({PLOTS_DIR}/{name})", ""]
    return lines


def _survival(metrics: Mapping[str, Mapping[str, Any]], ci: str) -> list[str]:
    models = [(model, entry) for model, entry in metrics.items() if RISK_GROUPS_KEY in entry]
    if not models:
        return []
    horizons = [key for key in dict.fromkeys(k for _, entry in models for k in entry) if key.startswith(TIME_AUC_PREFIX)]
    rows = [[_cell(model), format_interval(entry["hazard_ratio"]), f"{entry[RISK_GROUPS_KEY]['cutoff']:.4g}",
             _cell(entry[RISK_GROUPS_KEY]["description"]), *(format_interval(entry[k]) if k in entry else "n/a" for k in horizons)]
            for model, entry in models]
    time_auc = (f" AUC(t): cumulative/dynamic AUC at time t (events by t against patients event-free after t, cases weighted by "
                f"the inverse Kaplan-Meier probability of staying uncensored; Uno et al. 2007), with a patient-bootstrap {ci}."
                if horizons else " No time-dependent AUC was asked for (scoring.time_auc_horizons, --time-auc).")
    return [
        "## Predicted risk groups", "",
        ("High predicted risk is risk at or above the cut-off. The hazard ratio of the high-risk group against the "
        f"low-risk group is a Cox proportional-hazards fit (lifelines, Efron ties) of the group indicator on the rows with "
        f"follow-up; its {ci} is the fit's Wald interval, not a bootstrap (with several rows per patient, the robust "
        "variance clustered on patients). With repeats, it is the first repeat's." + time_auc), "",
        *_table(["Model", f"Hazard ratio, high vs low risk [{ci}]", "Cut-off", "Cut-off from",
                 *(f"AUC(t = {k[len(TIME_AUC_PREFIX):]}) [{ci}]" for k in horizons)], rows),
    ]


#: What the subgroup table shows, under it.
SUBGROUP_TEXT = ("The headline metrics within each value of each subgroup column (the site whenever the table has one), "
                 "bootstrapped over that subgroup's patients like the pooled ones.")


def subgroup_table(metrics: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], ci: str) -> tuple[list[str], list[list[str]]] | None:
    """The subgroup breakdowns of every model as a table (header, rows); ``None`` when there are none.

    Parameters
    ----------
    metrics
        metrics.json's content (model -> entries, some with ``subgroups``).
    labels
        How each metric is named (a task's ``metric_labels``).
    ci
        How intervals are headed, e.g. ``95% CI``.
    """
    models = [(model, entry[SUBGROUPS_KEY]) for model, entry in metrics.items() if entry.get(SUBGROUPS_KEY)]
    if not models:
        return None
    first = next(iter(next(iter(models[0][1].values())).values()))
    names = [name for name in first if name not in ("n_patients", "n_slides")]
    header = ["Model", "Column", "Value", "Patients", *(f"{labels.get(n, n)} [{ci}]" for n in names)]
    rows = []
    for model, breakdown in models:
        for column, values in breakdown.items():
            for value, entry in values.items():
                rows.append([_cell(model), _cell(column), _cell(value), str(entry["n_patients"]),
                             *(format_interval(entry[n]) for n in names)])
    return header, rows


def _subgroups(metrics: Mapping[str, Mapping[str, Any]], task: Task, ci: str) -> list[str]:
    table = subgroup_table(metrics, task.metric_labels, ci)
    return [] if table is None else ["## Subgroups", "", SUBGROUP_TEXT, "", *_table(*table)]
