"""``wsi-pipeline compare RUN_A RUN_B ... [--output DIR] [--metric NAME]``: a leaderboard of runs with CIs and paired p-values.

Parsing and printing only: the work is done by :mod:`wsi_pipeline.scoring.compare`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich.console import Console
from rich.table import Table


def add_compare_parser(commands: Any) -> None:  # argparse's private _SubParsersAction
    """Add the ``compare`` command to the CLI's subcommands."""
    compare = commands.add_parser(
        "compare", help="rank the models of several scored runs, with CIs and paired tests against the leader",
        description="a leaderboard of runs: each run folder's metrics.json, predictions.csv and run.json",
    )
    compare.add_argument("runs", nargs="+", help="finished run output folders (predictions.csv, metrics.json, run.json)")
    compare.add_argument("--output", help="folder for leaderboard.csv/.md/.html and comparisons.json (default: print only)")
    compare.add_argument("--metric", help="metric to rank and test by (default: the task's headline, e.g. auc, c_index, mae)")
    compare.add_argument("--ci-level", type=float, default=0.95, help="confidence level of the paired intervals (default 0.95)")
    compare.add_argument("--n-resamples", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def compare_command(args: argparse.Namespace, console: Console) -> int:
    """Write the leaderboard (with --output) and print it as a table on stdout."""
    from wsi_pipeline.scoring.compare import compare_runs
    from wsi_pipeline.scoring.formatting import format_interval, format_p

    board = compare_runs(args.runs, args.output, metric=args.metric, n_resamples=args.n_resamples, ci_level=args.ci_level,
                         seed=args.seed)
    metric = board.loc[0, "metric"]
    table = Table("#", "run", "model", "encoder", f"{metric} [CI]", "patients", "finished", "shared", "difference", "p", "test",
                  title=f"leaderboard by {metric}")
    for _, row in board.iterrows():
        interval = format_interval(_numbers(row, ("value", "ci_low", "ci_high")))
        leader = row["rank"] == 1
        tested = not leader and _number(row["difference"]) is not None  # refused pairs: the test column says why
        difference = format_interval(_numbers(row, ("difference", "difference_ci_low", "difference_ci_high"))) if tested else ""
        table.add_row(str(row["rank"]), str(row["run"]), str(row["model"]), str(row["encoder"]), interval, str(row["n_patients"]),
                      str(row["finished"])[:16], "" if leader else str(row["shared_patients"]), difference,
                      format_p(_number(row["p_vs_leader"])) if tested else "", "(leader)" if leader else str(row["test"]))
    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = 1000  # piped or captured: one line per row
    out.print(table)
    console.print(f"  leaderboard.csv, .md, .html and comparisons.json in {args.output}" if args.output
                  else "  nothing written (pass --output DIR for leaderboard.csv/.md/.html)", highlight=False)
    return 0


def _number(value: Any) -> float | None:
    # The leaderboard holds None or NaN where a number is undefined.
    number = None if value is None else float(value)
    return number if number is not None and math.isfinite(number) else None


def _numbers(row: Any, keys: tuple[str, str, str]) -> dict[str, float | None]:
    return {name: _number(row[key]) for name, key in zip(("value", "ci_low", "ci_high"), keys, strict=True)}
