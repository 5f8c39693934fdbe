"""Feature entries to and from ``.h5`` files in the CLAM / TRIDENT layout.

One file per slide, as CLAM and TRIDENT write and read them:

- dataset ``features`` (N, D) and dataset ``coords`` (N, 2), the level-0 top-left (x, y) of each
  tile, row for row;
- attrs on ``coords`` describing the patches: ``patch_size`` (tile side in pixels at the read
  resolution), ``patch_size_level0``, ``patch_level`` (CLAM's name) and ``level`` (the pyramid level
  read), ``target_mpp``, ``effective_mpp``, ``slide_mpp``, ``level0_magnification`` and
  ``target_magnification`` (TRIDENT's, by its 10 / µm-per-px convention), ``overlap`` and ``name``.

Files written here also carry the entry's whole provenance, so importing them back gives the same
entries under the same keys: root attrs ``wsi_pipeline_format``, ``encoder_id``, ``tiling_id``,
``slide_entry``, ``feature_attrs`` and ``tiling_attrs`` (JSON strings), and a group
``wsi_pipeline_tiling`` with the tiling entry's QC columns and masks. Other tools ignore them.

Files from elsewhere (no such provenance) are imported under an encoder id the user gives, a tiling
id hashed from their ``coords`` attrs, and a slide entry named after the file, or after the content
fingerprint of the matching slide file when a slide folder is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import wsi_pipeline
from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.store.checksum import RowsDigest, rows_sha256
from wsi_pipeline.store.claims import entry_lock
from wsi_pipeline.store.feature_store import (
    FeatureStore,
    features_key,
    slide_entry,
    tiling_key,
)
from wsi_pipeline.store.inventory import EntryInfo, list_entries, open_store
from wsi_pipeline.store.keys import short_hash

#: Version of the provenance layout written here (root attr ``wsi_pipeline_format``).
H5_FORMAT = 1
#: Group holding the tiling entry's QC columns and masks.
TILING_GROUP = "wsi_pipeline_tiling"
#: Rows copied at a time, so a slide's features are never all in memory at once.
ROWS_PER_COPY = 8192

#: Attrs that record a write, not what was computed: set again by the store when an entry is
#: imported (the originals are kept under ``imported_from``).
FEATURE_BOOKKEEPING = ("n_tiles", "dim", "dtype", "package_version", "created", "completed_at", "complete", "features_sha256",
                       "tiling_coords_sha256")
TILING_BOOKKEEPING = ("n_tiles", "columns", "masks", "package_version", "created", "complete", "coords_sha256")
#: ``coords`` attrs of other tools that name a file rather than describe the patches.
NAMING_ATTRS = ("name", "savetodir", "save_path")

ENCODER_ID_FIX = (
    "pass --encoder-id with the id the features should be stored under (the encoder that made them, "
    "e.g. uni-<first 12 hex of its weights' sha256>, as `wsi-pipeline store ls` shows for our own entries)"
)
LAYOUT_FIX = "give a CLAM / TRIDENT feature file: datasets 'features' (N, D) and 'coords' (N, 2)"


# -- export -------------------------------------------------------------------------------------
def export_h5(
    root: str | Path,
    output_dir: str | Path,
    encoder_id: str | None = None,
    tiling_id: str | None = None,
    *,
    features_dtype: str = "float32",
) -> list[Path]:
    """Write one ``.h5`` file per complete feature entry of the store (see the module's description).

    Parameters
    ----------
    root
        The store (local folder or fsspec URL).
    output_dir
        Where the files go. When the entries exported span more than one (encoder, tiling) pair,
        each pair gets a subfolder ``<encoder_id>/<tiling_id>/``; otherwise files go straight in.
    encoder_id, tiling_id
        Export only these entries.
    features_dtype
        dtype of the ``features`` dataset: float32 (default) is what CLAM and TRIDENT write and their
        loaders expect; the stored float16 values convert to it and back exactly.

    Returns
    -------
    list of Path
        The files written, one per entry. A file is named after the entry's slide id; two entries
        of one slide id in one folder get the slide entry name added (``<slide_id>.<entry>.h5``).

    Raises
    ------
    WSIPipelineError
        When nothing matches, or a feature entry lacks its complete tiling entry (nothing written).
    """
    infos = list_entries(str(root))
    chosen = [
        info for info in infos
        if info.kind == "features" and info.complete
        and (encoder_id is None or info.encoder_id == encoder_id) and (tiling_id is None or info.tiling_id == tiling_id)
    ]
    if not chosen:
        pairs = sorted({f"--encoder {i.encoder_id} --tiling {i.tiling_id}" for i in infos if i.kind == "features" and i.complete})
        raise WSIPipelineError(
            f"no complete feature entry{_filter_text(encoder_id, tiling_id)} to export",
            where=str(root),
            fix=f"choose among: {'; '.join(pairs)}" if pairs else "extract features into this store first",
        )
    tilings = {(i.tiling_id, i.slide): i for i in infos if i.kind == "tiling" and i.complete}
    for info in chosen:
        tiling = tilings.get((info.tiling_id, info.slide))
        if tiling is None or tiling.rows != info.rows:
            raise WSIPipelineError(
                f"feature entry '{info.key}' has no complete tiling entry with its {info.rows} rows, so its tiles have no coordinates",
                where=str(root),
                fix=f"run `wsi-pipeline store verify {root}` and re-run the pipeline to rebuild the damaged entries",
            )
    store = open_store(str(root))
    paths = []
    for info, target in zip(chosen, _file_names(chosen, Path(output_dir))):
        _write_file(store, info, tilings[(info.tiling_id, info.slide)], target, features_dtype)
        paths.append(target)
    return paths


def _filter_text(encoder_id: str | None, tiling_id: str | None) -> str:
    parts = [f"encoder {encoder_id}" if encoder_id else "", f"tiling {tiling_id}" if tiling_id else ""]
    text = " and ".join(p for p in parts if p)
    return f" for {text}" if text else ""


def _file_names(chosen: list[EntryInfo], output_dir: Path) -> list[Path]:
    """Folder and unique file name of each entry's file."""
    nested = len({(info.encoder_id, info.tiling_id) for info in chosen}) > 1
    folders = [output_dir / str(i.encoder_id) / i.tiling_id if nested else output_dir for i in chosen]
    stems = [_safe_name(str(info.slide_id or info.slide)) for info in chosen]
    taken: dict[tuple[Path, str], int] = {}
    for folder, stem in zip(folders, stems):
        taken[(folder, stem)] = taken.get((folder, stem), 0) + 1
    return [
        folder / (f"{stem}.{info.slide}.h5" if taken[(folder, stem)] > 1 else f"{stem}.h5")
        for folder, stem, info in zip(folders, stems, chosen)
    ]


def _safe_name(name: str) -> str:
    # A slide id is free text: never let it leave the output folder.
    cleaned = name.replace("/", "_").replace("\\", "_").replace(os.sep, "_").strip()
    return "_" if cleaned in ("", ".", "..") else cleaned


def _write_file(store: Any, info: EntryInfo, tiling: EntryInfo, target: Path, features_dtype: str) -> None:
    features = store[info.key]["features"]
    tiling_group = store[tiling.key]
    n_rows, dim = int(features.shape[0]), int(features.shape[1])
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as h5:
        out = h5.create_dataset("features", shape=(n_rows, dim), dtype=features_dtype)
        for start in range(0, n_rows, ROWS_PER_COPY):
            out[start : start + ROWS_PER_COPY] = features[start : start + ROWS_PER_COPY]
        coords = h5.create_dataset("coords", data=np.asarray(tiling_group["coords"][...], dtype=np.int64))
        coords.attrs.update(patch_attrs({**info.attrs, **tiling.attrs}))
        out.attrs.update({"name": str(info.slide_id or info.slide), "encoder_id": str(info.encoder_id)})
        extra = h5.create_group(TILING_GROUP)
        for name in tiling.attrs.get("columns", []):
            extra.create_dataset(name, data=tiling_group[name][...])
        for name in tiling.attrs.get("masks", []):
            extra.create_dataset(f"mask_{name}", data=tiling_group[f"mask_{name}"][...])
        h5.attrs.update(
            {
                "wsi_pipeline_format": H5_FORMAT,
                "wsi_pipeline_version": wsi_pipeline.__version__,
                "encoder_id": str(info.encoder_id),
                "tiling_id": info.tiling_id,
                "slide_entry": info.slide,
                "feature_attrs": json.dumps(info.attrs, sort_keys=True),
                "tiling_attrs": json.dumps(tiling.attrs, sort_keys=True),
            }
        )


def patch_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``coords`` attrs CLAM and TRIDENT read, from an entry's tiling provenance (absent values left out)."""
    size0 = attrs.get("tile_size_level0")
    if isinstance(size0, float) and size0.is_integer():
        size0 = int(size0)
    slide_mpp, effective_mpp = attrs.get("slide_mpp"), attrs.get("effective_mpp")
    out = {
        "patch_size": attrs.get("tile_px"),
        "patch_size_level0": size0,
        "patch_level": attrs.get("read_level"),
        "level": attrs.get("read_level"),
        "target_mpp": attrs.get("target_mpp"),
        "effective_mpp": effective_mpp,
        "slide_mpp": slide_mpp,
        "level0_magnification": 10.0 / slide_mpp if slide_mpp else None,
        "target_magnification": 10.0 / effective_mpp if effective_mpp else None,
        "overlap": (attrs.get("tiling_params") or {}).get("overlap_px", 0),
        "name": attrs.get("slide_id"),
    }
    return {key: value for key, value in out.items() if value is not None}


# -- import -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportedEntry:
    """What importing one file did.

    Attributes
    ----------
    file
        The ``.h5`` file.
    key, tiling_key
        The feature and tiling entries it went to.
    encoder_id, tiling_id, slide
        Their parts.
    slide_from
        Where the slide entry name came from: ``"provenance"`` (a file we exported), ``"file name"``
        (the file's stem) or ``"slide file <path>"`` (the content fingerprint of that slide).
    status
        ``"imported"``, ``"overwritten"`` or ``"identical"`` (already in the store; nothing written).
    rows, dim
        The features' shape.
    invalidated
        Other encoders' feature entries on a tiling entry this import replaced with other
        coordinates: marked incomplete (:meth:`FeatureStore.invalidate`), so the next run
        extracts them again instead of pairing their rows with the new tiles.
    """

    file: str
    key: str
    tiling_key: str
    encoder_id: str
    tiling_id: str
    slide: str
    slide_from: str
    status: str
    rows: int
    dim: int
    invalidated: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-serialisable values."""
        return {**asdict(self), "invalidated": list(self.invalidated)}


@dataclass(frozen=True)
class _Plan:
    """One file's import, decided before anything is written."""

    file: Path
    encoder_id: str
    tiling_id: str
    slide: str
    slide_from: str
    rows: int
    dim: int
    feature_attrs: dict[str, Any]
    tiling_attrs: dict[str, Any]
    ours: bool


def import_h5(
    paths_or_dir: str | Path | Iterable[str | Path],
    store_root: str | Path,
    encoder_id: str | None = None,
    tiling_id: str | None = None,
    *,
    slides_dir: str | Path | None = None,
    overwrite: bool = False,
    source_name: str = "wsi",
) -> list[ImportedEntry]:
    """Bring ``.h5`` feature files into the store as complete tiling and feature entries.

    Every file's layout and provenance are checked before anything is written, and a file we
    exported is checked against its checksums before its entries are. Each entry is written
    through :class:`FeatureStore` under the entry's write lock and marked complete last.

    Parameters
    ----------
    paths_or_dir
        A folder (every ``*.h5`` under it, subfolders included), a file, or several of them.
    store_root
        The store to import into (created if absent).
    encoder_id, tiling_id
        Store the entries under these ids. Files we exported keep their own ids unless these are
        given; other files need ``encoder_id``, and their tiling id defaults to a hash of their
        ``coords`` attrs (``h5_<patch_size>px_<hash>``).
    slides_dir
        For other files: name each slide entry after the content fingerprint of the slide file of
        the same name in this folder (as a pipeline run would), instead of after the file name.
    overwrite
        Replace a complete entry whose content differs; without it that is an error. An entry
        with the same content is left as it is. Replacing a tiling entry with other coordinates
        marks every other encoder's features on it incomplete (``invalidated`` in the result):
        their rows follow the old tiles, and the next run extracts them again.
    source_name
        The image source that opens the slide files of ``slides_dir``.

    Returns
    -------
    list of ImportedEntry
        One per file, in file order.

    Raises
    ------
    WSIPipelineError
        A file that cannot be read, lacks ``features`` or ``coords``, has mismatched shapes or a
        checksum its values do not match; a file of another tool without ``encoder_id``; an entry
        that exists with other content without ``overwrite``.
    """
    files = _h5_files(paths_or_dir)
    plans = [_plan(file, encoder_id, tiling_id, slides_dir, source_name) for file in files]
    store = FeatureStore(store_root)
    store.prepare(*sorted({f"tiling/{p.tiling_id}" for p in plans} | {f"features/{p.encoder_id}/{p.tiling_id}" for p in plans}))
    return [_import_one(store, plan, overwrite) for plan in plans]


def _h5_files(paths_or_dir: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths_or_dir] if isinstance(paths_or_dir, (str, Path)) else list(paths_or_dir)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.rglob("*.h5"))
            if not found:
                raise WSIPipelineError("no .h5 file in this folder", where=str(item), fix="give the folder of the exported .h5 files")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise WSIPipelineError("no such file or folder", where=str(item), fix="give a folder of .h5 files or .h5 files")
    return files


def _plan(file: Path, encoder_id: str | None, tiling_id: str | None, slides_dir: str | Path | None, source_name: str) -> _Plan:
    """Read a file's layout and attrs (not its values) and decide where it goes."""
    try:
        with h5py.File(file, "r") as h5:
            rows, dim = _check_layout(h5, file)
            root_attrs = {key: _plain(value) for key, value in h5.attrs.items()}
            coords_attrs = {key: _plain(value) for key, value in h5["coords"].attrs.items()}
            features_attrs = {key: _plain(value) for key, value in h5["features"].attrs.items()}
    except OSError as error:
        raise WSIPipelineError(
            f"cannot read this HDF5 file ({error})",
            where=str(file),
            fix="check that it is a complete .h5 file (a copy cut short cannot be read), or leave it out",
        ) from None
    if "wsi_pipeline_format" in root_attrs:
        try:
            feature_attrs = json.loads(root_attrs["feature_attrs"])
            tiling_attrs = json.loads(root_attrs["tiling_attrs"])
            own = (root_attrs["encoder_id"], root_attrs["tiling_id"], root_attrs["slide_entry"])
        except (KeyError, TypeError, ValueError) as error:
            raise WSIPipelineError(
                f"its wsi-pipeline provenance is damaged ({type(error).__name__}: {error})",
                where=str(file),
                fix="export it again, or import it as another tool's file by removing its 'wsi_pipeline_format' attr",
            ) from None
        if feature_attrs.get("n_tiles", rows) != rows or feature_attrs.get("dim", dim) != dim:
            raise WSIPipelineError(
                f"its features are ({rows}, {dim}) but its provenance says ({feature_attrs.get('n_tiles')}, {feature_attrs.get('dim')})",
                where=str(file),
                fix="export it again from the source store",
            )
        return _Plan(file, encoder_id or own[0], tiling_id or own[1], own[2], "provenance", rows, dim, feature_attrs, tiling_attrs, True)
    if not encoder_id:
        raise WSIPipelineError(
            "this file has no wsi-pipeline provenance (written by CLAM, TRIDENT or another tool), so the encoder of its features is unknown",
            where=str(file),
            fix=ENCODER_ID_FIX,
        )
    geometry = {key: value for key, value in coords_attrs.items() if key not in NAMING_ATTRS}
    if tiling_id is None:
        size = geometry.get("patch_size")
        tiling_id = f"h5_{size}px_{short_hash(geometry)}" if isinstance(size, int) else f"h5_{short_hash(geometry)}"
    tiling_attrs = {"slide_id": file.stem, **_foreign_geometry(coords_attrs), "h5_coords_attrs": coords_attrs}
    slide, slide_from = file.stem, "file name"
    if slides_dir is not None:
        slide, slide_from, slide_info = _slide_from_file(file, Path(slides_dir), source_name)
        tiling_attrs.update(slide_info)
    feature_attrs = {
        "slide_id": file.stem,
        "encoder_id": encoder_id,
        "h5_features_attrs": features_attrs,
        **{k: tiling_attrs[k] for k in ("slide_path", "slide_mpp", "tile_px", "tile_size_level0", "read_level") if k in tiling_attrs},
    }
    return _Plan(file, encoder_id, tiling_id, slide, slide_from, rows, dim, feature_attrs, tiling_attrs, False)


def read_h5_features(file: str | Path) -> np.ndarray:
    """The ``features`` (N, D) of a CLAM / TRIDENT ``.h5`` file, as stored (``coords`` optional here).

    Raises
    ------
    WSIPipelineError
        Naming the file, when it cannot be read or has no 2-D ``features`` (or ``coords`` that do
        not match it row for row).
    """
    file = Path(file)
    try:
        with h5py.File(file, "r") as h5:
            if not isinstance(h5.get("features"), h5py.Dataset):
                raise WSIPipelineError(
                    f"no 'features' dataset in this file (it has: {', '.join(h5) or 'nothing'})", where=str(file), fix=LAYOUT_FIX
                )
            if "coords" in h5:
                _check_layout(h5, file)
            features = h5["features"][()]
    except OSError as error:
        raise WSIPipelineError(
            f"cannot read this HDF5 file ({error})",
            where=str(file),
            fix="check that it is a complete .h5 file (a copy cut short cannot be read), or leave it out",
        ) from None
    if features.ndim != 2:
        raise WSIPipelineError(f"'features' is {features.shape}: expected (N, D)", where=str(file), fix=LAYOUT_FIX)
    return features


def _check_layout(h5: h5py.File, file: Path) -> tuple[int, int]:
    for name in ("features", "coords"):
        if not isinstance(h5.get(name), h5py.Dataset):
            raise WSIPipelineError(f"no '{name}' dataset in this file (it has: {', '.join(h5) or 'nothing'})", where=str(file), fix=LAYOUT_FIX)
    features, coords = h5["features"], h5["coords"]
    if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != features.shape[0]:
        raise WSIPipelineError(
            f"'features' is {features.shape} and 'coords' is {coords.shape}: expected (N, D) and (N, 2)", where=str(file), fix=LAYOUT_FIX
        )
    return int(features.shape[0]), int(features.shape[1])


def _plain(value: Any) -> Any:
    """An HDF5 attr value as plain JSON-serialisable Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _foreign_geometry(attrs: dict[str, Any]) -> dict[str, Any]:
    """Our tiling attrs from CLAM's or TRIDENT's ``coords`` attrs, where they say enough."""
    out: dict[str, Any] = {}
    size = attrs.get("patch_size")
    level = attrs.get("patch_level", attrs.get("level"))
    if isinstance(size, (int, float)):
        out["tile_px"] = int(size)
    if isinstance(level, (int, float)):
        out["read_level"] = int(level)
    if isinstance(attrs.get("patch_size_level0"), (int, float)):  # TRIDENT
        out["tile_size_level0"] = attrs["patch_size_level0"]
    elif isinstance(size, (int, float)) and isinstance(attrs.get("downsample"), list) and attrs["downsample"]:  # CLAM
        out["tile_size_level0"] = size * float(attrs["downsample"][0]) * float(attrs.get("custom_downsample", 1))
    for key in ("target_mpp", "effective_mpp", "slide_mpp"):
        if isinstance(attrs.get(key), (int, float)):
            out[key] = attrs[key]
    return out


def _slide_from_file(file: Path, slides_dir: Path, source_name: str) -> tuple[str, str, dict[str, Any]]:
    """The slide entry of the slide file named like ``file`` in ``slides_dir``, as a run computes it."""
    from wsi_pipeline.sources.protocol import require_mpp
    from wsi_pipeline.sources.registry import open_source

    if not slides_dir.is_dir():
        raise WSIPipelineError("no such slide folder", where=str(slides_dir), fix="give --slides the folder of the slide files")
    matches = sorted(
        path for path in slides_dir.iterdir()
        if path.suffix != ".h5" and (path.stem == file.stem or path.name.startswith(f"{file.stem}."))
    )
    if len(matches) != 1:
        found = f"{len(matches)} ({', '.join(m.name for m in matches)})" if matches else "none"
        raise WSIPipelineError(
            f"expected one slide file named {file.stem}.* in {slides_dir}, found {found}",
            where=str(file),
            fix="name the .h5 file after its slide file, or import without --slides (the entry is then named after the file)",
        )
    with open_source(source_name, matches[0]) as source:
        mpp = require_mpp(source, fix="import without --slides, or give a slide file that records its µm/px")
        info = {"slide_path": str(matches[0]), "slide_mpp": mpp, "vendor": source.vendor, "level0_size": list(source.dimensions)}
        return slide_entry(source.uid, mpp), f"slide file {matches[0]}", info


def _import_one(store: FeatureStore, plan: _Plan, overwrite: bool) -> ImportedEntry:
    with h5py.File(plan.file, "r") as h5:
        coords = np.asarray(h5["coords"][...], dtype=np.int64)
        digest = RowsDigest("float16")
        for start in range(0, plan.rows, ROWS_PER_COPY):
            digest.update(h5["features"][start : start + ROWS_PER_COPY])
        features_sha, coords_sha = digest.hexdigest(), rows_sha256(coords, "int64")
        extra = h5.get(TILING_GROUP)
        columns = {} if extra is None else {n: extra[n][...] for n in plan.tiling_attrs.get("columns", []) if n in extra}
        masks = {} if extra is None else {n: extra[f"mask_{n}"][...] for n in plan.tiling_attrs.get("masks", []) if f"mask_{n}" in extra}
        if plan.ours:
            for name, recorded, actual in (
                ("features_sha256", plan.feature_attrs.get("features_sha256"), features_sha),
                ("coords_sha256", plan.tiling_attrs.get("coords_sha256"), coords_sha),
            ):
                if recorded is not None and recorded != actual:
                    raise WSIPipelineError(
                        f"its values do not match the {name} recorded when it was exported: the file was changed or damaged",
                        where=str(plan.file),
                        fix="export it again from the source store",
                    )
        tkey = tiling_key(plan.tiling_id, plan.slide)
        fkey = features_key(plan.encoder_id, plan.tiling_id, plan.slide)
        states = {key: _existing(store, key, sha, overwrite, plan.file) for key, sha in ((tkey, coords_sha), (fkey, features_sha))}
        invalidated: list[str] = []
        if states[tkey] != "identical":
            with entry_lock(store.root, tkey):
                store.write_tiling(
                    plan.tiling_id, plan.slide, coords, columns, _imported(plan.tiling_attrs, TILING_BOOKKEEPING, plan.file), masks=masks
                )
            if states[tkey] == "overwritten":
                invalidated = _invalidate_other_features(store, plan, fkey)
        if states[fkey] != "identical":
            with entry_lock(store.root, fkey):
                writer = store.begin_features(
                    plan.encoder_id, plan.tiling_id, plan.slide, plan.rows, plan.dim,
                    _imported(plan.feature_attrs, FEATURE_BOOKKEEPING, plan.file),
                )
                for start in range(0, plan.rows, ROWS_PER_COPY):
                    writer.write(h5["features"][start : start + ROWS_PER_COPY])
                writer.complete()
    written = [state for state in states.values() if state != "identical"]
    status = "identical" if not written else ("overwritten" if "overwritten" in written else "imported")
    return ImportedEntry(str(plan.file), fkey, tkey, plan.encoder_id, plan.tiling_id, plan.slide, plan.slide_from, status, plan.rows, plan.dim,
                         tuple(invalidated))


def _invalidate_other_features(store: FeatureStore, plan: _Plan, own_key: str) -> list[str]:
    """Mark incomplete every other encoder's complete features on the tiling entry just replaced; their keys.

    Their rows follow the old coordinates: kept complete, a run would skip them and train on
    features of other tiles than the store now lists (with as many rows, nothing would tell).
    """
    reason = f"its tiling entry was replaced with other coordinates (import-h5 --overwrite of {plan.file})"
    invalidated = []
    for key in store.feature_keys_on(plan.tiling_id, plan.slide):
        if key == own_key:
            continue
        with entry_lock(store.root, key):
            if store.is_complete(key):
                store.invalidate(key, reason)
                invalidated.append(key)
    return invalidated


def _existing(store: FeatureStore, key: str, sha: str, overwrite: bool, file: Path) -> str:
    """``"absent"``, ``"identical"`` or ``"overwritten"`` for a complete entry at ``key`` with other content (an error without ``overwrite``)."""
    if not store.is_complete(key):
        return "absent"
    kind = "tiling" if key.startswith("tiling/") else "features"
    attrs = store.attrs(key)
    name = "coords_sha256" if kind == "tiling" else "features_sha256"
    recorded = attrs.get(name)
    if recorded is None:  # written before checksums: hash what is stored
        parts = key.split("/")
        if kind == "tiling":
            recorded = rows_sha256(store.read_tiling(parts[1], parts[2]).coords, "int64")
        else:
            recorded = rows_sha256(store.read_features(parts[1], parts[2], parts[3]).features, "float16")
    if recorded == sha:
        return "identical"
    if not overwrite:
        raise WSIPipelineError(
            f"the store already has a complete {kind} entry '{key}' with other content",
            where=str(file),
            fix="pass --overwrite to replace it, or import under another --encoder-id / --tiling-id",
        )
    return "overwritten"


def _imported(attrs: dict[str, Any], bookkeeping: tuple[str, ...], file: Path) -> dict[str, Any]:
    """An entry's attrs for the store: its provenance as is, the original write's bookkeeping under ``imported_from``."""
    kept = {key: value for key, value in attrs.items() if key not in bookkeeping and key != "imported_from"}
    original = {key: attrs[key] for key in ("created", "completed_at", "package_version") if key in attrs}
    return {**kept, "imported_from": {"file": str(file), **original}}
