"""Preflight on the workers: can every worker reach the paths the run gives it?

On a laptop the client and the workers share one file system; on a cluster they may not. A
slide folder mounted on the login node but not on the compute nodes would otherwise fail every
slide, one task at a time, with a "file not found" from deep inside a reader. Here one small
function runs on each connected worker before any work and the run stops with one message
that names the workers, the paths and what they are for.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from distributed import Client

from wsi_pipeline.errors import WSIPipelineError

if TYPE_CHECKING:
    from wsi_pipeline.config.loader import RunConfig

#: Labels of the paths that workers write to (checked for writing, see :func:`check_paths_on_workers`).
WRITTEN_BY_WORKERS: frozenset[str] = frozenset({"feature store", "output folder"})

MOUNT_FIX = (
    "mount the same file system on every worker at the same path, or use paths/URLs the workers can reach "
    "(e.g. s3:// for the store)"
)


def local_path(path: str) -> str | None:
    """The file-system path to check for ``path``, or ``None`` when workers cannot check it here.

    ``file://`` URLs are local paths. ``memory://`` lives in each process (a worker never sees the
    client's), and remote URLs (``s3://``, ``gs://``...) are reached with each worker's own
    credentials at first use; checking them would cost a request per worker, so they are skipped.
    """
    if "://" not in path:
        return path
    parts = urlsplit(path)
    if parts.scheme == "file":
        return parts.path
    return None


def _problem(path: str, write: bool) -> str | None:
    """Why this process cannot use ``path`` (read it, or write into it), or ``None`` when it can."""
    if os.path.exists(path):
        if os.path.isdir(path):
            # Listing a folder needs read, entering it execute; writing into it needs both plus write.
            mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
        else:
            mode = os.R_OK | (os.W_OK if write else 0)
        if not os.access(path, mode):
            return "not writable" if write and os.access(path, mode & ~os.W_OK) else "not readable"
        return None
    if not write:
        return "does not exist"
    # A folder the run writes is created on demand, inside a parent that must already be there:
    # an absent parent means the mount is missing, not that the folder is new.
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"does not exist, nor its parent {parent}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and its parent {parent} is not writable"
    return None


def path_problems(paths: Mapping[str, str], writable: Collection[str] = ()) -> dict[str, str]:
    """Run on a worker: label → what is wrong with that path in this process (only the failing ones).

    Parameters
    ----------
    paths
        Label (what the path is, e.g. "slide folder") → path or URL.
    writable
        Labels of the paths this process must be able to write into.
    """
    problems = {}
    for label, path in paths.items():
        checked = local_path(path)
        if checked is None:
            continue
        problem = _problem(os.path.expanduser(checked), label in writable)
        if problem is not None:
            problems[label] = problem
    return problems


def check_paths_on_workers(
    client: Client, paths: Mapping[str, str], *, writable: Collection[str] = WRITTEN_BY_WORKERS
) -> None:
    """Check on every connected worker that each path exists and can be read (or written).

    The check runs in the worker processes themselves (``client.run``), so it sees their mounts,
    user and working folder, not the client's. Workers that join later (batch jobs still in the
    queue, adaptive scaling) are not checked: call this after ``client.wait_for_workers`` when
    the first ones must be.

    Parameters
    ----------
    client
        A client of the run's cluster.
    paths
        What each path is → the path, e.g. ``{"slide folder": "/data/slides", "feature store":
        "/shared/store"}``. ``file://`` URLs are checked as paths; ``memory://`` and remote URLs
        (``s3://``...) are skipped.
    writable
        Labels of the paths the workers write: these must exist and be writable, or, not yet
        created, have a writable parent folder. Default: "feature store" and "output folder".

    Raises
    ------
    WSIPipelineError
        Naming, for each path missing or unusable on some worker, its label, the path, what is
        wrong and the workers' addresses.
    """
    if not any(local_path(p) is not None for p in paths.values()):
        return
    per_worker: dict[str, dict[str, str]] = client.run(path_problems, dict(paths), frozenset(writable))
    names = {address: info.get("name") for address, info in client.scheduler_info()["workers"].items()}
    # One line per (label, problem), listing every worker it concerns: a missing mount is usually
    # missing on a whole class of nodes, and one line with ten addresses reads better than ten lines.
    grouped: dict[tuple[str, str], list[str]] = {}
    for address in sorted(per_worker):
        for label, problem in per_worker[address].items():
            name = names.get(address)
            shown = f"{address} ({name})" if name is not None and str(name) != address else address
            grouped.setdefault((label, problem), []).append(shown)
    if not grouped:
        return
    lines = [
        f"{label} {paths[label]}: {problem} on {len(workers)} of {len(per_worker)} worker(s): {', '.join(workers)}"
        for (label, problem), workers in grouped.items()
    ]
    raise WSIPipelineError(
        "the workers cannot use path(s) the run needs:\n  " + "\n  ".join(lines),
        where="cluster workers",
        fix=MOUNT_FIX,
    )


def worker_paths(config: RunConfig) -> dict[str, str]:
    """The paths of a run that its workers open, by label, for :func:`check_paths_on_workers`.

    Slides (by their folder, for a cohort table), the tissue model file when one is configured,
    the feature store and the output folder (tiling QC); for a cohort that brings its features,
    the instance table or the folder of .h5 files instead of the store. The cohort table is read by the client
    only, so it is not listed.
    """
    paths: dict[str, Any] = {}
    if config.slide_root is not None:
        paths["slide folder"] = str(config.slide_root)
    model = config.workflow.tiling.tissue.model
    if model is not None:
        paths["tissue model"] = model.path
    if config.instances is not None:
        paths["instance table"] = str(config.instances)
    if config.h5_dir is not None:
        paths["folder of .h5 files"] = str(config.h5_dir)
    if not config.features_given:  # a cohort with its features never opens the store
        paths["feature store"] = config.store_path
    paths["output folder"] = str(config.output_dir)
    return paths
