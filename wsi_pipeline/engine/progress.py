"""Submit tasks to Dask and show a progress bar while they complete."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, as_completed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wsi_pipeline.engine.outcome import ItemOutcome


def run_tasks(
    client: Client,
    stage: str,
    function: Callable[..., ItemOutcome],
    items: Sequence[tuple[str, tuple[Any, ...]]],
    console: Console,
    *,
    retries: int = 1,
) -> list[ItemOutcome]:
    """Run ``function(*args)`` for every ``(name, args)`` item as a Dask task.

    Tasks catch their own errors (see :func:`guarded`); a task that still raises, e.g. because
    its worker died twice, is recorded as failed, and the others go on.

    Returns
    -------
    list of ItemOutcome
        In the order of ``items``.
    """
    if not items:
        return []
    futures = {
        client.submit(function, *args, key=f"{stage}-{name}", pure=False, retries=retries): index
        for index, (name, args) in enumerate(items)
    }
    results: list[ItemOutcome | None] = [None] * len(items)
    log_every = max(1, len(items) // 10)
    columns = (TextColumn(f"[bold]{stage:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("", total=len(items))
        failed = done = 0
        for future in as_completed(futures):
            index = futures[future]
            name = items[index][0]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - a lost worker must not stop the run
                outcome = ItemOutcome(stage, name, "failed", reason=f"task lost: {type(error).__name__}: {error}")
            results[index] = outcome
            failed += outcome.status == "failed"
            progress.update(bar, advance=1, description=f"[red]{failed} failed" if failed else "")
            done += 1
            if not console.is_terminal and (done % log_every == 0 or done == len(items)):
                # Batch logs (SLURM, CI) get no live bar: leave a line every ~10% instead.
                console.print(f"  {time.strftime('%H:%M:%S')} {stage}: {done}/{len(items)} tasks finished, {failed} failed")
    return [r for r in results if r is not None]
