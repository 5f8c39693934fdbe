"""The cluster's logs, gathered into the run folder: what workers said is kept with the run."""

from __future__ import annotations

import re
from pathlib import Path

from distributed import Client

from wsi_pipeline.atomic import atomic_write_text

#: Log lines kept per worker (Dask keeps a bounded in-memory log on each worker and the scheduler).
LOG_LINES = 10_000


def gather_cluster_logs(client: Client, folder: Path) -> list[Path]:
    """Write the scheduler's and each connected worker's recent log lines to ``folder``.

    Files are ``scheduler.log`` and ``worker-<name or address>.log``, one ``LEVEL message`` per
    line, replaced on each run. Workers that died before the end of the run are gone with their
    logs; their failures are in ``run.json`` and ``failures/``.

    Returns
    -------
    list of Path
        The files written (none when the cluster could not be asked).
    """
    try:
        workers = client.get_worker_logs(n=LOG_LINES)
        scheduler = client.get_scheduler_logs(n=LOG_LINES)
        names = {address: info.get("name", address) for address, info in client.scheduler_info()["workers"].items()}
    except (OSError, TimeoutError):  # a scheduler already gone: the run's own record still says what happened
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(folder / "scheduler.log", _lines(scheduler))]
    for address, lines in sorted(workers.items()):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(names.get(address, address)))
        written.append(atomic_write_text(folder / f"worker-{name}.log", _lines(lines)))
    return written


def _lines(entries: list[tuple[str, str]]) -> str:
    return "".join(f"{level} {message}\n" for level, message in entries)
