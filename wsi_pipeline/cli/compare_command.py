"""``wsi-pipeline compare RUN_A RUN_B ... --output DIR``: a leaderboard of runs with CIs and paired p-values.

Parsing and printing only: the work is done by :mod:`wsi_pipeline.scoring.compare`.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console


def add_compare_parser(commands: Any) -> None:  # argparse's private _SubParsersAction
    """Add the ``compare`` command to the CLI's subcommands."""
    compare = commands.add_parser(
        "compare", help="rank the models of several scored runs, with CIs and paired tests against the leader",
        description="a leaderboard of runs: each run folder's metrics.json, predictions.csv and run.json",
    )
    compare.add_argument("runs", nargs="+", help="run output folders (scored)")
    compare.add_argument("--output", required=True, help="folder for leaderboard.csv/.md/.html and comparisons.json")
    compare.add_argument("--ci-level", type=float, default=0.95, help="confidence level of the paired intervals (default 0.95)")
    compare.add_argument("--n-resamples", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def compare_command(args: argparse.Namespace, console: Console) -> int:
    """Write the leaderboard and print it."""
    from wsi_pipeline.scoring.compare import compare_runs
    from wsi_pipeline.scoring.formatting import format_interval, format_p

    board = compare_runs(args.runs, args.output, n_resamples=args.n_resamples, ci_level=args.ci_level, seed=args.seed)
    for _, row in board.iterrows():
        interval = format_interval({"value": row["value"], "ci_low": row["ci_low"], "ci_high": row["ci_high"]})
        p = "" if row["rank"] == 1 else f"  p vs leader {format_p(row['p_vs_leader'])}"
        console.print(f"  {row['rank']:>2}. {row['run']}/{row['model']}: {row['metric']} {interval}{p}", highlight=False)
    console.print(f"  leaderboard in {args.output}", highlight=False)
    return 0
