"""The run record, ``run.json``: versions, resolved config, seed, timings, skips and failures."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from wsi_pipeline.atomic import atomic_write_text
from wsi_pipeline.engine.outcome import STATUSES, ItemOutcome

PACKAGES = ("wsi-pipeline", "torch", "torchvision", "timm", "openslide-python", "openslide-bin", "zarr", "dask", "distributed", "numpy", "scikit-image", "scikit-learn", "pandas", "lifelines", "pydantic")


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape results, plus Python's."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json_atomic(path: Path, data: Any) -> None:
    """Write indented JSON atomically (values JSON does not know are written as strings)."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def archive_previous(path: Path) -> None:
    """Keep an earlier run's record: a re-run (or a failed start) must not erase its history."""
    try:
        started = json.loads(path.read_text(encoding="utf-8")).get("started", "unknown")
    except (OSError, ValueError):
        return
    history = path.parent / ".history"
    history.mkdir(exist_ok=True)
    stamp = str(started).replace(":", "").replace("+", "Z")
    os.replace(path, history / f"run-{stamp}-{time.time_ns()}.json")


@dataclass
class RunRecord:
    """Collects what a run did; written to ``run.json`` at the end (and on failure).

    ``timings`` holds each stage's wall time, from its first task submitted to its last one
    finished; tile and extract overlap, so they do not add up to ``wall_seconds``, the run's.
    """

    config: dict[str, Any]
    seed: int
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    timings: dict[str, float] = field(default_factory=dict)
    wall_seconds: float | None = None
    outcomes: list[ItemOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    excluded_patients: dict[str, str] = field(default_factory=dict)
    run_warnings: list[str] = field(default_factory=list)
    cluster: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def add_timing(self, name: str, seconds: float) -> None:
        """Record a stage's wall time measured elsewhere (stages that overlap)."""
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 3)

    def add(self, outcomes: list[ItemOutcome]) -> None:
        """Record task outcomes."""
        self.outcomes.extend(outcomes)

    def count(self, stage: str) -> dict[str, int]:
        """Done/skipped/failed/blocked counts of a stage."""
        counts = dict.fromkeys(STATUSES, 0)
        for outcome in self.outcomes:
            if outcome.stage == stage:
                counts[outcome.status] += 1
        return counts

    def retries(self, stage: str) -> int:
        """Extra starts of a stage's tasks: workers lost under them, or retries after an error."""
        return sum(o.attempts - 1 for o in self.outcomes if o.stage == stage)

    @property
    def warnings(self) -> list[str]:
        """Warnings, once each: the run's own (no worker offers a GPU), then the tasks' (a µm/px override far from the metadata)."""
        seen: dict[str, None] = dict.fromkeys(self.run_warnings)
        for outcome in self.outcomes:
            for warning in outcome.info.get("warnings", ()):
                seen.setdefault(warning, None)
        return list(seen)

    @property
    def failures(self) -> list[ItemOutcome]:
        """Every failed item."""
        return [o for o in self.outcomes if o.status == "failed"]

    @staticmethod
    def _write_traceback(folder: Path, outcome: ItemOutcome) -> dict[str, str]:
        """Write a failed item's full traceback to ``failures/<stage>-<item>.txt``; its path for run.json."""
        if not outcome.traceback:
            return {}
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{outcome.stage}-{outcome.item}") + ".txt"
        target = folder / "failures" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, f"{outcome.stage} {outcome.item}: {outcome.reason}\n\n{outcome.traceback}")
        return {"traceback_file": str(target.relative_to(folder))}

    def write(self, path: Path, status: str) -> None:
        """Write ``run.json``; the previous run's record moves to ``.history/`` beside it."""
        archive_previous(path)
        failed = [{**o.as_dict(), **self._write_traceback(path.parent, o)} for o in self.failures]
        stages = sorted({o.stage for o in self.outcomes}, key=[o.stage for o in self.outcomes].index)
        write_json_atomic(
            path,
            {
                "status": status,
                "started": self.started,
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seed": self.seed,
                "versions": package_versions(),
                "cluster": self.cluster,
                "config": self.config,
                "wall_seconds": self.wall_seconds,
                "timings_seconds": self.timings,
                "counts": {s: self.count(s) for s in stages},
                "retries": {s: self.retries(s) for s in stages},
                "failed": failed,
                "skipped": [{"stage": o.stage, "item": o.item, "reason": o.reason} for o in self.outcomes if o.status == "skipped"],
                "blocked": [{"stage": o.stage, "item": o.item, "reason": o.reason} for o in self.outcomes if o.status == "blocked"],
                "excluded_patients": self.excluded_patients,
                "warnings": self.warnings,
                "notes": self.notes,
                "items": [o.as_dict() for o in self.outcomes],
            },
        )
