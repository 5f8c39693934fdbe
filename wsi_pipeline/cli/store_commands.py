"""``wsi-pipeline store ...``: list, verify, export and import a feature store's entries.

Parsing and printing only: the work is done by :mod:`wsi_pipeline.store.inventory`,
:mod:`wsi_pipeline.store.verify` and :mod:`wsi_pipeline.store.h5_io`, imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from wsi_pipeline.store.inventory import EntryInfo

STORE_HELP = "the feature store: a folder or fsspec URL (the manifest's 'store', default <output>/store)"


def add_store_parser(commands: Any) -> None:  # argparse's private _SubParsersAction
    """Add the ``store`` command group to the CLI's subcommands."""
    store = commands.add_parser(
        "store", help="list, verify, export and import the feature store's entries", description="the feature store's entries"
    )
    sub = store.add_subparsers(dest="store_command", required=True)
    ls = sub.add_parser("ls", help="list every entry: encoder, tiling, slide, rows, dim, complete")
    ls.add_argument("store", help=STORE_HELP)
    ls.add_argument("--json", action="store_true", help="print a JSON list of entries, each with its provenance")
    verify = sub.add_parser(
        "verify",
        help="check every complete entry's arrays, chunks and checksums against its attrs and tiling; exit 1 if any is damaged",
    )
    verify.add_argument("store", help=STORE_HELP)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--repair", action="store_true",
        help="mark each bad entry incomplete (with its reasons) so that the next run rebuilds it; exit status stays 1",
    )
    export = sub.add_parser("export-h5", help="write one <slide>.h5 per feature entry in the CLAM/TRIDENT layout")
    export.add_argument("store", help=STORE_HELP)
    export.add_argument("--output", required=True, help="output folder")
    export.add_argument("--encoder", help="export only this encoder id's entries")
    export.add_argument("--tiling", help="export only this tiling id's entries")
    imp = sub.add_parser("import-h5", help="bring .h5 feature files (ours, CLAM's, TRIDENT's) into a store as complete entries")
    imp.add_argument("path", help="a folder of .h5 files (searched recursively) or one .h5 file")
    imp.add_argument("--store", required=True, help=STORE_HELP)
    imp.add_argument("--encoder-id", help="encoder id to store the features under (required for files not exported by wsi-pipeline)")
    imp.add_argument("--tiling-id", help="tiling id to store them under (default: theirs, or a hash of their patch attrs)")
    imp.add_argument("--slides", help="folder of the slide files: name entries by each slide's content fingerprint, not the file name")
    imp.add_argument("--overwrite", action="store_true", help="replace complete entries whose content differs")
    imp.add_argument("--source", default="wsi", help="image source that opens the --slides files (default: wsi, OpenSlide)")


def store_command(args: argparse.Namespace) -> int:
    """Run a ``store`` subcommand; results go to stdout."""
    out = Console(highlight=False, soft_wrap=True)
    if args.store_command == "ls":
        return _ls(args, out)
    if args.store_command == "verify":
        return _verify(args, out)
    if args.store_command == "export-h5":
        from wsi_pipeline.store.h5_io import export_h5

        paths = export_h5(args.store, args.output, encoder_id=args.encoder, tiling_id=args.tiling)
        for path in paths:
            out.print(str(path))
        out.print(f"{len(paths)} file(s) written to {args.output}")
        return 0
    from wsi_pipeline.store.h5_io import import_h5

    results = import_h5(
        args.path, args.store, encoder_id=args.encoder_id, tiling_id=args.tiling_id,
        slides_dir=args.slides, overwrite=args.overwrite, source_name=args.source,
    )
    for result in results:
        out.print(f"{result.status}: {result.file} -> {result.key} ({result.rows} x {result.dim}; slide entry from {result.slide_from})")
        for key in result.invalidated:
            out.print(f"  invalidated {key}: computed on the tiles this import replaced; the next run extracts it again")
    written = sum(result.status != "identical" for result in results)
    out.print(f"{written} of {len(results)} file(s) written to {args.store}; {len(results) - written} already there")
    return 0


def _ls(args: argparse.Namespace, out: Console) -> int:
    from wsi_pipeline.store.inventory import list_entries

    entries = list_entries(args.store)
    if args.json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2, default=str))
        return 0
    table = Table("kind", "encoder", "tiling", "slide entry", "slide id", "rows", "dim", "complete", title=f"{args.store}")
    for entry in entries:
        table.add_row(
            entry.kind, entry.encoder_id or "", entry.tiling_id, entry.slide, entry.slide_id or "",
            _text(entry.rows), _text(entry.dim), _completeness(entry),
        )
    if not out.is_terminal:
        out.width = 1000  # piped or captured: whole ids on one line each, never wrapped at 80 columns
    out.print(table)
    complete = sum(entry.complete for entry in entries)
    out.print(f"{len(entries)} entries, {complete} complete")
    return 0


def _verify(args: argparse.Namespace, out: Console) -> int:
    from wsi_pipeline.store.verify import invalidate_bad, verify_store

    report = verify_store(args.store)
    repaired = invalidate_bad(report) if args.repair else {}
    if args.json:
        print(json.dumps({**report.to_dict(), **({"repaired": repaired} if args.repair else {})}, indent=2, default=str))
        return 0 if report.clean else 1
    for check in report.bad:
        out.print(f"BAD {check.key}")
        for reason in check.reasons:
            out.print(f"    {reason}")
        if check.key in repaired:
            problem = repaired[check.key]
            out.print("    -> marked incomplete: the next run rebuilds it (import it again if it was imported)" if problem is None
                      else f"    -> could not be marked ({problem}): delete its folder <store>/{check.key}")
    if report.incomplete:
        out.print(f"incomplete (ignored by readers, rewritten by the next run): {len(report.incomplete)}")
        for check in report.incomplete:
            out.print(f"    {check.key}" + "".join(f" ({note})" for note in check.notes if note.startswith("invalidated:")))
    if report.without_checksum:
        out.print(f"{len(report.without_checksum)} entries written before checksums: checked for shapes and chunks only")
    out.print(
        f"{len(report.ok)} ok, {len(report.bad)} bad, {len(report.incomplete)} incomplete in {args.store}"
        + ("" if report.clean or args.repair else
           ": run again with --repair (or delete each bad entry's folder <store>/<key>), then re-run the pipeline to rebuild them")
    )
    return 0 if report.clean else 1


def _completeness(entry: EntryInfo) -> str:
    if entry.complete:
        return "yes"
    if entry.error:
        return "unreadable"
    return "no (invalidated)" if entry.attrs.get("invalidated") else "no"


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
