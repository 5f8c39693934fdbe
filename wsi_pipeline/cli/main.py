"""The ``wsi-pipeline`` command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from wsi_pipeline import __version__
from wsi_pipeline.errors import WSIPipelineError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="wsi-pipeline",
        description="Whole-slide images to validated predictions: tile, extract, train, score.",
    )
    parser.add_argument("--version", action="version", version=f"wsi-pipeline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "run": "run every stage of a manifest (tile, extract, train, score)",
        "tile": "tissue-segment and tile the cohort's slides into the store",
        "extract": "embed the tiles of the cohort's slides into the store",
        "train": "cross-validate the aggregators on stored features",
        "score": "score predictions.csv in the output folder",
    }
    for name, help_text in helps.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("manifest", help="run manifest (YAML), e.g. data_manifests/demo.yaml")
        command.add_argument("--output", help="output folder (overrides the manifest's 'output')")
        command.add_argument("--scheduler", help="address of an existing Dask scheduler (overrides cluster.address)")
        command.add_argument("--dry-run", action="store_true", help="validate everything and print the plan without computing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    0: everything worked; 1: the run finished but some items failed (listed, and in run.json);
    2: bad input (manifest, preset, cohort, weights), printed without a traceback.
    """
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        from wsi_pipeline.config.loader import load_run_config
        from wsi_pipeline.engine.plan import dry_run
        from wsi_pipeline.engine.runner import STAGES, run_pipeline

        config = load_run_config(args.manifest, output=args.output, scheduler=args.scheduler)
        stages = STAGES if args.command == "run" else (args.command,)
        if args.dry_run:
            return dry_run(config, stages, Console())
        return run_pipeline(config, stages, console).exit_code
    except WSIPipelineError as error:
        print(f"error: {error.format()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished work is in the store; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
