"""What happened to one item (slide, fold) in one stage: done, skipped or failed, and why."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from wsi_pipeline.errors import WSIPipelineError

Status = Literal["done", "skipped", "failed"]


@dataclass
class ItemOutcome:
    """The result of one task, as recorded in ``run.json``."""

    stage: str
    item: str
    status: Status
    reason: str | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def guarded(stage: str, item: str, work: Callable[[], ItemOutcome]) -> ItemOutcome:
    """Run ``work`` and turn any exception into a failed outcome, so one item never stops a run.

    A :class:`WSIPipelineError` keeps its user-facing message; anything else is reported with
    its type and where it was raised, because it is a bug worth reporting, not bad input.
    """
    start = time.perf_counter()
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
        )
    outcome.seconds = round(time.perf_counter() - start, 3)
    return outcome
