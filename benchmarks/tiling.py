"""Tile-stage cost and peak memory against slide size, with the thumbnail read as same-run baseline.

The tile stage (tissue segmentation at thumbnail scale, the tile grid at a physical resolution,
per-tile QC) should cost in proportion to the tissue area, not to the level-0 pixel count, and
its peak memory should stay flat as slides grow. This script writes synthetic slides of the
requested sizes (`write_large_slide`, cached in ``--workdir``), then, for each slide and in a
fresh subprocess each (so its peak resident memory, ``VmHWM``, is that slide's own):

(a) opens it with ``open_source("wsi", path)`` and times ``source.thumbnail(8.0)`` alone: reading
    the segmentation-scale picture is the least any tile stage must do (the baseline);
(b) times ``tile_slide(source, TilingConfig(mpp=0.5, tile_px=256))`` in another fresh process,
    recording wall time, peak RSS, tiles kept and the tissue area found.

Only ratios within one run are reported (machines are noisy): tile stage over thumbnail read, µs
per kept tile, and largest over smallest peak RSS. Timings are warm-cache (the slides were just
written or read). Usage::

    python benchmarks/tiling.py --sizes 20000x20000 60000x60000 150000x100000 --workdir /tmp/tiling-bench
    python benchmarks/tiling.py --sizes 20000x20000 60000x60000 --constant-tissue --flat

Variants: ``area`` keeps ``--tissue-fraction`` so tissue grows with the slide; ``--constant-tissue``
adds ``tissue`` slides whose tissue area stays that of the smallest ``area`` slide (cost should
then stay about flat, apart from the thumbnail); ``--flat`` adds single-level slides (no pyramid:
the thumbnail must be streamed from level 0, its memory should still stay bounded; the sizes are
``--flat-sizes``, default those of ``--sizes`` up to 4 Gpx: a flat slide's thumbnail decodes all of
level 0, about 15 min each time for 150,000 x 100,000 on 2 cores). Delete ``--workdir`` afterwards:
the 150,000 x 100,000 slide alone is ~1.2 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: A per-kept-tile cost or a peak RSS counts as "flat" when largest / smallest stays under this.
FLAT_RATIO = 1.5
#: Without ``--flat-sizes``, flat slides are made of the ``--sizes`` up to this many level-0 Gpx:
#: the streamed thumbnail of a flat slide decodes all of level 0 (twice: baseline and tile stage).
FLAT_DEFAULT_MAX_GPX = 4.0


@dataclass(frozen=True)
class SlideJob:
    """One synthetic slide to benchmark."""

    variant: str  # "area", "tissue" or "flat"
    width: int
    height: int
    tissue_fraction: float
    flat: bool

    @property
    def gpx(self) -> float:
        return self.width * self.height / 1e9

    def file_name(self, seed: int, mpp: float) -> str:
        flat = "_flat" if self.flat else ""
        return f"slide_{self.width}x{self.height}_mpp{mpp:g}_tf{self.tissue_fraction:.6f}_s{seed}{flat}.tiff"


def parse_size(text: str) -> tuple[int, int]:
    """``'150000x100000'`` -> ``(150000, 100000)`` (width x height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 20000x20000, got {text!r}") from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f"size must be at least 64x64, got {text!r}")
    return width, height


def plan_jobs(args: argparse.Namespace) -> list[SlideJob]:
    """The slides to benchmark, in table order (each variant by increasing size)."""
    sizes = sorted(dict.fromkeys(args.sizes), key=lambda s: s[0] * s[1])
    jobs = [SlideJob("area", w, h, args.tissue_fraction, False) for w, h in sizes]
    if args.constant_tissue:
        smallest = sizes[0][0] * sizes[0][1]
        for w, h in sizes:
            jobs.append(SlideJob("tissue", w, h, args.tissue_fraction * smallest / (w * h), False))
    if args.flat:
        default = [(w, h) for w, h in sizes if w * h <= FLAT_DEFAULT_MAX_GPX * 1e9] or sizes[:1]
        flat_sizes = sorted(dict.fromkeys(args.flat_sizes or default), key=lambda s: s[0] * s[1])
        jobs.extend(SlideJob("flat", w, h, args.tissue_fraction, True) for w, h in flat_sizes)
    return jobs


def ensure_slide(job: SlideJob, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Write the slide unless the cache holds it; return its path and truth summary."""
    from wsi_pipeline.atomic import atomic_write_text
    from wsi_pipeline.sources.synthetic import write_large_slide

    path = Path(args.workdir) / job.file_name(args.seed, args.slide_mpp)
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        return path, json.loads(sidecar.read_text())
    print(f"writing {path.name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    truth = write_large_slide(
        path,
        job.width,
        job.height,
        mpp=args.slide_mpp,
        tissue_fraction=job.tissue_fraction,
        seed=args.seed,
        flat=job.flat,
        workers=args.write_workers,
    )
    summary = {
        "write_s": time.perf_counter() - start,
        "file_mb": path.stat().st_size / 1e6,
        "tissue_fraction": truth.tissue_fraction,
        "tissue_area_mm2": truth.tissue_area_mm2,
        "levels": truth.n_levels,
    }
    atomic_write_text(sidecar, json.dumps(summary, indent=2))
    print(f"  {summary['write_s']:.1f} s, {summary['file_mb']:.0f} MB", file=sys.stderr, flush=True)
    return path, summary


# --------------------------------------------------------------------------------------------
# Child process: one measurement, printed as one JSON line.


def _peak_rss_mb() -> float:
    """This process's own peak resident memory, MB.

    Linux keeps ``ru_maxrss`` across ``execve``, so a child forked from a parent that had just
    written a big slide would report the parent's peak; ``VmHWM`` belongs to the process's own
    address space, new at exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(kind: str, slide: str, thumbnail_mpp: float, tile_mpp: float, tile_px: int) -> dict[str, Any]:
    """Run one measurement in this process (called in a fresh subprocess)."""
    from wsi_pipeline.config import TilingConfig
    from wsi_pipeline.sources.registry import open_source
    from wsi_pipeline.tiling import tile_slide

    config = TilingConfig(mpp=tile_mpp, tile_px=tile_px)
    result: dict[str, Any] = {"kind": kind, "rss_before_mb": _peak_rss_mb()}
    start = time.perf_counter()
    with open_source("wsi", slide) as source:
        opened = time.perf_counter()
        if kind == "thumbnail":
            picture, scale = source.thumbnail(thumbnail_mpp)
            result.update(shape=list(picture.shape), scale=scale)
        else:
            tiling = tile_slide(source, config)
            result.update(
                kept=len(tiling.coords),
                grid_tiles=int(tiling.n_grid_tiles),
                dropped=dict(tiling.dropped),
                tissue_area_mm2=float(tiling.tissue_area_mm2),
                read_level=int(tiling.geometry.read_level),
            )
        done = time.perf_counter()
    result.update(open_s=opened - start, seconds=done - opened, peak_rss_mb=_peak_rss_mb())
    return result


def run_child(kind: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``kind`` on ``path`` in a fresh interpreter; the best of ``--repeats`` runs."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_measure",
        kind,
        str(path),
        str(args.thumbnail_mpp),
        str(args.tile_mpp),
        str(args.tile_px),
    ]
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
        if done.returncode:
            raise RuntimeError(f"{kind} on {path.name} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["seconds"])
    best["all_seconds"] = [run["seconds"] for run in runs]
    best["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    return best


# --------------------------------------------------------------------------------------------
# Report


def _ratio(values: list[float]) -> float:
    return max(values) / min(values) if values and min(values) > 0 else math.nan


def report(rows: list[dict[str, Any]]) -> str:
    """The results table and one closing line per variant."""
    header = (
        f"{'variant':<7} {'slide px':>15} {'L0 Gpx':>7} {'truth mm2':>9} {'tissue mm2':>10} {'kept':>7} "
        f"{'thumb s':>8} {'tile s':>8} {'tile/thumb':>10} {'us/tile':>8} "
        f"{'thumb RSS':>9} {'peak RSS MB':>11}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        tile, thumb = row["tile"], row["thumbnail"]
        per_tile = tile["seconds"] / tile["kept"] * 1e6 if tile["kept"] else math.nan
        row["us_per_tile"] = per_tile
        lines.append(
            f"{row['variant']:<7} {row['width']:>7}x{row['height']:<7} {row['gpx']:>7.2f} "
            f"{row['truth']['tissue_area_mm2']:>9.1f} "
            f"{tile['tissue_area_mm2']:>10.1f} {tile['kept']:>7} {thumb['seconds']:>8.2f} "
            f"{tile['seconds']:>8.2f} {tile['seconds'] / thumb['seconds']:>10.1f} {per_tile:>8.0f} "
            f"{thumb['peak_rss_mb']:>9.0f} {tile['peak_rss_mb']:>11.0f}"
        )
    lines.append("")
    for variant in dict.fromkeys(row["variant"] for row in rows):
        group = [row for row in rows if row["variant"] == variant]
        if len(group) < 2:
            continue
        pixels = _ratio([row["gpx"] for row in group])
        tissue = _ratio([row["tile"]["tissue_area_mm2"] for row in group])
        cost = _ratio([row["us_per_tile"] for row in group])
        stage = _ratio([row["tile"]["seconds"] for row in group])
        memory = _ratio([row["tile"]["peak_rss_mb"] for row in group])
        lines.append(
            f"{variant}: level-0 px x{pixels:.1f}, tissue x{tissue:.1f}, tile-stage time x{stage:.1f}; "
            f"us per kept tile largest/smallest = {cost:.2f} "
            f"({'flat' if cost <= FLAT_RATIO else 'NOT flat'}); "
            f"peak RSS largest/smallest = {memory:.2f} "
            f"({'flat' if memory <= FLAT_RATIO else 'NOT flat'}; 'flat' = within {FLAT_RATIO}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_measure":
        kind, slide, thumbnail_mpp, tile_mpp, tile_px = argv[1:6]
        print(json.dumps(measure(kind, slide, float(thumbnail_mpp), float(tile_mpp), int(tile_px))))
        return

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(20_000, 20_000), (60_000, 60_000)],
                        help="slide sizes WIDTHxHEIGHT (default: 20000x20000 60000x60000)")
    parser.add_argument("--workdir", default="/tmp/tiling-bench", help="where slides are written and cached")
    parser.add_argument("--tissue-fraction", type=float, default=0.3)
    parser.add_argument("--constant-tissue", action="store_true",
                        help="also slides whose tissue area stays that of the smallest slide")
    parser.add_argument("--flat", action="store_true", help="also single-level (no pyramid) slides")
    parser.add_argument("--flat-sizes", nargs="+", type=parse_size, default=None,
                        help="sizes of the flat slides (default: those of --sizes up to 4 Gpx)")
    parser.add_argument("--slide-mpp", type=float, default=0.25, help="level-0 µm/px of the slides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thumbnail-mpp", type=float, default=8.0, help="segmentation scale of the baseline")
    parser.add_argument("--tile-mpp", type=float, default=0.5)
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per measurement; the fastest is kept")
    parser.add_argument("--write-workers", type=int, default=os.cpu_count() or 1,
                        help="threads encoding tiles while writing slides")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args(argv)

    rows = []
    for job in plan_jobs(args):
        path, truth = ensure_slide(job, args)
        print(f"measuring {path.name} ...", file=sys.stderr, flush=True)
        thumbnail = run_child("thumbnail", path, args)
        tile = run_child("tile", path, args)
        rows.append({**asdict(job), "gpx": job.gpx, "truth": truth, "thumbnail": thumbnail, "tile": tile})
        print(
            f"  thumbnail {thumbnail['seconds']:.2f} s, tile stage {tile['seconds']:.2f} s, "
            f"{tile['kept']} tiles kept, peak RSS {tile['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"tile stage: TilingConfig(mpp={args.tile_mpp}, tile_px={args.tile_px}); "
        f"baseline: thumbnail({args.thumbnail_mpp}); "
        f"slides at {args.slide_mpp} µm/px; best of {args.repeats} fresh process(es) each; warm page cache",
        flush=True,
    )
    print(report(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
