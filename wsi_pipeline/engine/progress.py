"""Submit tasks to Dask and show one progress bar per stage while they complete.

Stages may run at the same time (a slide's extraction starts as soon as its tiling is done),
so submitting and waiting are separate: :func:`submit_tasks` per stage, then one
:func:`wait_for` over all of them, which draws a bar for each.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future, as_completed
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from wsi_pipeline.engine.outcome import ItemOutcome


@dataclass
class StageTasks:
    """One stage's submitted tasks, their outcomes as they complete, and the stage's wall time.

    Attributes
    ----------
    stage
        The stage name; task keys are ``f"{stage}-{name}"``.
    names
        Item names, in submission order.
    futures
        One future per item, in the same order.
    submitted
        ``time.perf_counter()`` at the first submit.
    finished
        ``time.perf_counter()`` at the last completion (``None`` until every task is done).
    """

    stage: str
    names: list[str]
    futures: list[Future]
    submitted: float
    finished: float | None = None
    retries: int = 0
    outcomes: list[ItemOutcome | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outcomes = [None] * len(self.names)
        if not self.names:
            self.finished = self.submitted

    @property
    def seconds(self) -> float:
        """Wall time from the stage's first submit to its last completion.

        Stages overlap, so these do not add up to the run's wall time.
        """
        end = time.perf_counter() if self.finished is None else self.finished
        return round(end - self.submitted, 3)

    def results(self) -> list[ItemOutcome]:
        """The outcomes received so far, in the order of the items."""
        return [o for o in self.outcomes if o is not None]


def task_key(stage: str, item: str, batch: str) -> str:
    """The Dask key of one item's task: readable on the dashboard, unique per submission.

    ``<stage>-<item>`` alone collides when two runs (or two users) share a scheduler: Dask would
    hand the second run the first one's futures, results and failures. The submission's random
    ``batch`` token keeps every run's tasks apart.
    """
    return f"{stage}-{item}-{batch}"


def submit_tasks(
    client: Client,
    stage: str,
    function: Callable[..., ItemOutcome],
    items: Sequence[tuple[str, tuple[Any, ...]]],
    *,
    retries: int = 1,
    resources: Mapping[str, float] | None = None,
    priority: int = 0,
) -> StageTasks:
    """Submit ``function(*args)`` for every ``(name, args)`` item as a Dask task; do not wait.

    A future among ``args`` (another stage's task for the same item) makes the task wait for
    it: Dask passes the finished task's result in its place.

    Parameters
    ----------
    resources
        Worker resources each task holds while it runs, e.g. ``{"GPU": 1}``.
    priority
        Dask priority: among tasks ready on a worker, higher runs first.
    """
    submitted = time.perf_counter()
    batch = uuid.uuid4().hex[:12]
    futures = [
        client.submit(
            function, *args, key=task_key(stage, name, batch), pure=False, retries=retries, resources=resources, priority=priority
        )
        for name, args in items
    ]
    return StageTasks(stage, [name for name, _ in items], futures, submitted, retries=retries)


def task_attempts(client: Client, stages: Sequence[StageTasks]) -> dict[str, int]:
    """How many times the scheduler started each task: 1, plus one per worker lost while running it
    and one per retry after an error.

    Asked of the scheduler in one call while the futures are still held (it forgets a task once
    no client holds it). Keys the scheduler no longer knows are left out; a scheduler that
    refuses to run client code (``distributed.scheduler.pickle: false``) gives an empty answer.
    """
    requested = {future.key: batch.retries for batch in stages for future in batch.futures}
    if not requested:
        return {}

    # Nested, so it travels by value: the scheduler need not have this package installed.
    def count(dask_scheduler, requested: dict[str, int]) -> dict[str, int]:
        found = {}
        for key, retries in requested.items():
            state = dask_scheduler.tasks.get(key)
            if state is not None:
                found[key] = 1 + state.suspicious + max(0, retries - state.retries)
        return found

    try:
        return client.run_on_scheduler(count, requested=requested)
    except Exception:  # noqa: BLE001 - counts are a record, never a reason to fail the run
        return {}


def wait_for(stages: Sequence[StageTasks], console: Console) -> None:
    """Wait for every task of ``stages``, one progress bar per stage, filling their outcomes.

    Tasks catch their own errors (see :func:`guarded`); a task that still raises, e.g. because
    its worker died twice, is recorded as failed, and the others go on. Batch logs (SLURM, CI)
    get no live bar: each stage leaves a line every ~10% of its tasks instead.
    """
    pending = {future: (batch, index) for batch in stages for index, future in enumerate(batch.futures)}
    if not pending:
        return
    columns = (
        TextColumn("[bold]{task.fields[stage]:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {id(batch): progress.add_task("", total=len(batch.names), stage=batch.stage) for batch in stages if batch.names}
        done = dict.fromkeys(bars, 0)
        failed = dict.fromkeys(bars, 0)
        for future in as_completed(list(pending)):
            batch, index = pending[future]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - a lost worker must not stop the run
                outcome = ItemOutcome(
                    batch.stage,
                    batch.names[index],
                    "failed",
                    reason=f"task lost: {type(error).__name__}: {error}",
                    traceback="".join(traceback.format_exception(error)),
                )
            batch.outcomes[index] = outcome
            key, total = id(batch), len(batch.names)
            done[key] += 1
            failed[key] += outcome.status == "failed"
            if done[key] == total:
                batch.finished = time.perf_counter()
            progress.update(bars[key], advance=1, description=f"[red]{failed[key]} failed" if failed[key] else "")
            if not console.is_terminal and (done[key] % max(1, total // 10) == 0 or done[key] == total):
                console.print(f"  {time.strftime('%H:%M:%S')} {batch.stage}: {done[key]}/{total} tasks finished, {failed[key]} failed")
    attempts = task_attempts(next(iter(pending)).client, stages)
    for batch in stages:
        for future, outcome in zip(batch.futures, batch.outcomes):
            if outcome is not None:
                outcome.attempts = attempts.get(future.key, outcome.attempts)


def run_tasks(
    client: Client,
    stage: str,
    function: Callable[..., ItemOutcome],
    items: Sequence[tuple[str, tuple[Any, ...]]],
    console: Console,
    *,
    retries: int = 1,
    resources: Mapping[str, float] | None = None,
) -> list[ItemOutcome]:
    """Run one stage's tasks to completion with a progress bar.

    Returns
    -------
    list of ItemOutcome
        In the order of ``items``.
    """
    batch = submit_tasks(client, stage, function, items, retries=retries, resources=resources)
    wait_for([batch], console)
    return batch.results()
