"""The ``scoring.submission`` section: the file a challenge expects, written by the score stage.

A challenge asks for one row per patient in a fixed layout (an id column, a probability or
risk column under a name of its choosing). The workflow declares it here; the score stage
(:mod:`wsi_pipeline.scoring.submission`) writes it into the run folder from the named model's
out-of-fold predictions. Torch-free, like the rest of the configuration: the prediction
columns each task type writes are listed here rather than read from the task classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Files of a run folder that a submission must never replace.
RUN_FILES = frozenset({"predictions.csv", "folds.csv", "training.csv", "metrics.json", "run.json", "report.md", "report.html"})
#: Multiclass probability columns: ``prob_<class>`` (as :class:`~wsi_pipeline.mil.tasks.multiclass.MulticlassTask` writes them).
CLASS_PREFIX = "prob_"
#: The multiclass column of the most probable class.
PREDICTED_CLASS = "predicted"


def task_prediction_columns(task: Any) -> tuple[str, ...]:
    """The prediction columns a workflow's task section writes, known before any cohort is read.

    Parameters
    ----------
    task
        The workflow's ``task`` section (its ``type``, and a multiclass task's ``classes`` or a
        survival task's ``loss``).

    Returns
    -------
    tuple of str
        Binary ``score``; regression ``prediction``; survival ``risk`` (and ``rmst`` with the
        discrete-time loss); multiclass ``prob_<class>`` per configured class and
        ``predicted`` (only ``predicted`` when the classes come from the cohort).
    """
    kind = getattr(task, "type", "binary")
    if kind == "multiclass":
        return (*(f"{CLASS_PREFIX}{c}" for c in getattr(task, "classes", ()) or ()), PREDICTED_CLASS)
    if kind == "survival":
        return ("risk", "rmst") if getattr(task, "loss", "cox") == "discrete" else ("risk",)
    return {"regression": ("prediction",)}.get(kind, ("score",))


class SubmissionConfig(BaseModel):
    """Which model's predictions a challenge receives, and in what layout.

    One row per patient: the id column, then the chosen prediction columns, each the mean over
    the cross-validation's repeats (and over a patient's slides with slide-level bags) of the
    model's out-of-fold predictions -- every patient predicted by models that never trained on them.
    """

    # As StrictModel in workflow.py (which imports this module): unknown keys are errors.
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="the aggregator whose predictions are submitted; one of model.aggregators")
    file: str = Field("submission.csv", description="file name, written into the run folder")
    id_column: str = Field("patient_id", description="header of the patient id column")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="prediction column -> its header in the file, in file order, e.g. {score: probability}; "
        "empty: every prediction column of the task under its own name",
    )
    decimals: int | None = Field(6, ge=0, le=17, description="decimals of every number; null: full precision")
    format: Literal["csv", "tsv"] = Field("csv", description="csv (comma-separated) or tsv (tab-separated)")

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not value.strip() or "/" in value or "\\" in value or value in {".", ".."}:
            raise ValueError(f"file must be a plain file name inside the run folder (e.g. submission.csv), got {value!r}")
        if value in RUN_FILES:
            raise ValueError(f"file {value!r} is one of the run's own outputs; name the submission otherwise, e.g. submission.csv")
        return value

    @field_validator("id_column")
    @classmethod
    def _named_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("id_column must not be empty; e.g. patient_id")
        return value

    @model_validator(mode="after")
    def _distinct_headers(self) -> SubmissionConfig:
        headers = [self.id_column, *self.columns.values()]
        repeated = sorted({h for h in headers if headers.count(h) > 1})
        if repeated or any(not h.strip() for h in headers):
            raise ValueError(f"columns: every header must be non-empty and differ from the others and from id_column; "
                             f"repeated: {', '.join(map(repr, repeated)) or 'an empty header'}")
        return self

    def check(self, aggregators: Sequence[str], task: Any) -> None:
        """Check the section against the workflow: a trained model and columns the task writes.

        Parameters
        ----------
        aggregators
            The workflow's ``model.aggregators``.
        task
            The workflow's ``task`` section.

        Raises
        ------
        ValueError
            Naming the offending value, with the closest valid one ("did you mean").
        """
        if self.model not in aggregators:
            raise ValueError(f"scoring.submission.model {self.model!r} is not trained: {_hint(self.model, aggregators)}"
                             f"model.aggregators lists {', '.join(aggregators)}")
        known = task_prediction_columns(task)
        # Without configured classes, a multiclass task's prob_<class> columns are known only from the cohort.
        open_classes = getattr(task, "type", None) == "multiclass" and not getattr(task, "classes", None)
        for column in self.columns:
            if column in known or (open_classes and column.startswith(CLASS_PREFIX) and len(column) > len(CLASS_PREFIX)):
                continue
            raise ValueError(f"scoring.submission.columns: {column!r} is not a prediction column of a "
                             f"{getattr(task, 'type', 'binary')} task: {_hint(column, known)}it writes {', '.join(known)}"
                             + (f" and {CLASS_PREFIX}<class> per class" if open_classes else ""))


def _hint(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""
