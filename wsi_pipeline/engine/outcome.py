"""What happened to one item (slide, fold) in one stage: done, skipped or failed, and why."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from wsi_pipeline.errors import WSIPipelineError

#: ``blocked``: not attempted because the item's previous stage failed (a slide whose tiling
#: failed is not extracted); the slide counts once, as that stage's failure.
Status = Literal["done", "skipped", "failed", "blocked"]
STATUSES: tuple[Status, ...] = ("done", "skipped", "failed", "blocked")


@dataclass
class ItemOutcome:
    """The result of one task, as recorded in ``run.json``.

    ``started`` and ``finished`` are wall-clock (Unix) seconds of the work on its worker, so
    tasks of overlapping stages can be ordered; ``seconds`` is its duration.
    """

    stage: str
    item: str
    status: Status
    reason: str | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    #: The whole traceback of an unexpected error (a bug to report), every frame; written to the
    #: run folder's ``failures/`` by the run record, not into ``run.json``.
    traceback: str | None = None
    #: How many times the scheduler started the task: more than 1 when a worker died under it
    #: (or, with retries, it raised); filled in by the engine once the stage is over.
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (without the traceback, which has a file of its own)."""
        data = asdict(self)
        data.pop("traceback")
        return data


def guarded(stage: str, item: str, work: Callable[[], ItemOutcome]) -> ItemOutcome:
    """Run ``work`` and turn any exception into a failed outcome, so one item never stops a run.

    A :class:`WSIPipelineError` keeps its user-facing message; anything else is reported with
    its type and where it was raised, because it is a bug worth reporting, not bad input.
    """
    started, start = time.time(), time.perf_counter()
    try:
        outcome = work()
    except WSIPipelineError as error:
        outcome = ItemOutcome(stage, item, "failed", reason=error.format())
    except Exception as error:  # noqa: BLE001 - the point is to contain every failure
        frame = traceback.extract_tb(error.__traceback__)[-1]
        outcome = ItemOutcome(
            stage,
            item,
            "failed",
            reason=f"{type(error).__name__}: {error} (at {frame.filename}:{frame.lineno}; please report this)",
            traceback="".join(traceback.format_exception(error)),
        )
    outcome.seconds = round(time.perf_counter() - start, 3)
    outcome.started, outcome.finished = round(started, 3), round(time.time(), 3)
    return outcome
