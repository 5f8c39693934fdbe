"""The ``wsi-pipeline`` command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from wsi_pipeline import __version__
from wsi_pipeline.cli.compare_command import add_compare_parser, compare_command
from wsi_pipeline.cli.score_command import (
    add_standalone_options,
    is_standalone,
    standalone_score_command,
)
from wsi_pipeline.cli.store_commands import add_store_parser, store_command
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
        "score": "score predictions.csv in the output folder, or any predictions file (--predictions, --truth, --task)",
    }
    for name, help_text in helps.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        # score alone may go without a manifest: it then scores --predictions against --truth.
        command.add_argument("manifest", nargs="?" if name == "score" else None, help="run manifest (YAML), e.g. data_manifests/demo.yaml")
        command.add_argument("--output", help="output folder (overrides the manifest's 'output')")
        command.add_argument("--scheduler", help="address of an existing Dask scheduler (overrides cluster.address)")
        # Modes are checked by the library (with_cluster_mode), so parsing does not import the config models.
        command.add_argument(
            "--cluster",
            metavar="MODE",
            help="cluster mode, overriding cluster.mode: local | address | slurm | pbs | lsf (batch modes read cluster.jobs)",
        )
        command.add_argument("--dry-run", action="store_true", help="validate everything and print the plan without computing")
        if name == "score":
            add_standalone_options(command)

    slide = commands.add_parser("slide", help="look at one slide (no manifest needed)", description="look at one slide")
    slide_commands = slide.add_subparsers(dest="slide_command", required=True)
    info = slide_commands.add_parser("info", help="print a slide's format, size, pyramid and µm/px as JSON")
    info.add_argument("path", help="slide file (any format OpenSlide reads; a DICOM series' file or folder)")
    info.add_argument("--source", default="wsi", help="image source that reads it (default: wsi, OpenSlide)")

    tiles = commands.add_parser("tiles", help="tiles of one slide (no manifest needed)", description="tiles of one slide")
    tile_commands = tiles.add_subparsers(dest="tiles_command", required=True)
    export = tile_commands.add_parser(
        "export", help="tile a slide with the default tissue method and write N tissue tiles as PNG plus a contact sheet"
    )
    export.add_argument("path", help="slide file")
    export.add_argument("--n", type=int, default=32, help="tiles to write (default 32)")
    export.add_argument("--output", required=True, help="output folder")
    export.add_argument("--mpp", default="0.5", help="target µm/px or magnification, e.g. 0.5 or 20x (default 0.5)")
    export.add_argument("--tile-px", type=int, default=256, help="tile side in pixels (default 256)")
    export.add_argument("--slide-mpp", type=float, help="the slide's level-0 µm/px, overriding (or replacing missing) metadata")
    export.add_argument("--source", default="wsi", help="image source that reads it (default: wsi, OpenSlide)")
    add_store_parser(commands)
    add_compare_parser(commands)

    models = commands.add_parser(
        "models", help="list the encoders (dim, input, mean/std, µm/px, tile size) and whether their weights are here",
        description="the encoder registry; any timm model is also usable as timm:<name>",
    )
    models.add_argument("--json", action="store_true", help="print a JSON list of objects (name, dim, ..., weights)")
    return parser


#: What a user of ``tiles export`` is told when the slide has no µm/px.
SLIDE_MPP_FIX = "pass the slide's level-0 µm/px with --slide-mpp (e.g. --slide-mpp 0.25 for a 40x scan, 0.5 for 20x)"


def slide_command(args: argparse.Namespace) -> int:
    """``slide info``: JSON on stdout."""
    import json

    from wsi_pipeline.sources.describe import slide_info

    print(json.dumps(slide_info(args.path, args.source), indent=2))
    return 0


def tiles_command(args: argparse.Namespace, console: Console) -> int:
    """``tiles export``: PNG tiles and a contact sheet."""
    from wsi_pipeline.tiling.export import export_tiles

    result = export_tiles(
        args.path, args.n, args.output, mpp=args.mpp, tile_px=args.tile_px, slide_mpp=args.slide_mpp,
        source_name=args.source, mpp_fix=SLIDE_MPP_FIX,
    )
    console.print(
        f"{len(result.tiles)} of {result.n_kept} tissue tiles at {result.effective_mpp:.4g} µm/px written to "
        f"{args.output}; contact sheet: {result.contact_sheet}",
        highlight=False,
    )
    return 0


def models_command(args: argparse.Namespace) -> int:
    """``models``: the registry as a table, or JSON on stdout."""
    import json

    from rich.table import Table

    from wsi_pipeline.features.catalogue import list_models

    records = list_models()
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    table = Table(title="encoders (also: timm:<any timm model>)")
    for column in ("name", "dim", "input", "mean / std", "µm/px", "tile px", "output", "weights"):
        table.add_column(column, overflow="fold")
    for r in records:
        size = "x".join(map(str, r["input_size"])) + f" {r['interpolation']}" + (f" crop {r['crop_pct']:.3g}" if r["crop_pct"] < 1 else "")
        stats = f"{tuple(round(v, 3) for v in r['mean'])} / {tuple(round(v, 3) for v in r['std'])}"
        where = r["weights"] or f"[red]not found[/red] ({' or '.join(r['weights_files'])}; {r['hf_repo']})"
        mpp = "natural images" if r["recommended_mpp"] is None else f"{r['recommended_mpp']:g}"
        name = f"{r['name']} [yellow](demo)[/yellow]" if r["is_demo"] else r["name"]
        table.add_row(name, str(r["dim"]), size, stats, mpp, str(r["recommended_tile_px"]), r["output"], where)
    Console().print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    0: everything worked; 1: the run finished but some items failed (listed, and in run.json);
    2: bad input (manifest, preset, cohort, weights), printed without a traceback.
    """
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        if args.command == "slide":
            return slide_command(args)
        if args.command == "tiles":
            return tiles_command(args, console)
        if args.command == "store":
            return store_command(args)
        if args.command == "models":
            return models_command(args)
        if args.command == "compare":
            return compare_command(args, console)
        if is_standalone(args):
            return standalone_score_command(args, console)
        if args.manifest is None:
            raise WSIPipelineError("no manifest given", where=f"wsi-pipeline {args.command}",
                                   fix="pass a run manifest, or score a file with --predictions P.csv --truth T.csv --task binary")
        from wsi_pipeline.config.loader import load_run_config
        from wsi_pipeline.engine.plan import dry_run
        from wsi_pipeline.engine.runner import STAGES, run_pipeline

        config = load_run_config(args.manifest, output=args.output, scheduler=args.scheduler)
        if args.cluster:
            from wsi_pipeline.engine.cluster import with_cluster_mode

            config = with_cluster_mode(config, args.cluster, scheduler=args.scheduler)
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
