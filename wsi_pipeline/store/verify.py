"""Check that a store's complete entries hold what their attrs say: ``wsi-pipeline store verify``.

For every complete entry:

- its arrays exist with the shapes its attrs give (``n_tiles`` rows; ``dim`` columns of features;
  coordinates (n, 2); each QC column of ``columns`` n long; each mask of ``masks`` present);
- every chunk of every array is in the store and decodes. A lost chunk file is silent in Zarr:
  the rows read as zeros. Entries written with checksums have every chunk written (see
  :data:`~wsi_pipeline.store.feature_store.EVERY_CHUNK`), so any missing chunk is damage; older
  entries may lack all-zero chunks that Zarr skipped, so there a missing chunk counts only in
  ``features`` and ``coords`` (whose chunks are never all zeros) and is a note elsewhere;
- the values hash to the checksum recorded at write time (``features_sha256``, ``coords_sha256``),
  when the entry has one; entries written before checksums are checked without (and say so);
- a feature entry has a complete tiling entry with as many tiles, and, when it recorded them, the
  same coordinates it was computed on (``tiling_coords_sha256``).

Incomplete entries (a run interrupted, or in progress) are listed but are not damage: readers
ignore them and the next run rewrites them.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import zarr
from zarr.core.sync import sync

from wsi_pipeline.store.checksum import RowsDigest
from wsi_pipeline.store.claims import entry_lock
from wsi_pipeline.store.feature_store import FeatureStore
from wsi_pipeline.store.inventory import EntryInfo, list_entries, open_store


@dataclass
class EntryCheck:
    """The verdict on one entry.

    Attributes
    ----------
    key, kind
        The entry (see :class:`~wsi_pipeline.store.inventory.EntryInfo`).
    status
        ``"ok"``, ``"bad"`` or ``"incomplete"``.
    reasons
        Why the entry is bad, one line each (empty unless bad).
    notes
        What was not checked, or is odd without being damage.
    checksum
        ``"verified"``, ``"mismatch"``, ``"absent"`` (written before checksums), or ``None``
        when the values could not all be read (or the entry is incomplete).
    """

    key: str
    kind: str
    status: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checksum: str | None = None


@dataclass
class VerifyReport:
    """Every entry's verdict (see :func:`verify_store`)."""

    root: str
    entries: list[EntryCheck]

    def _with(self, status: str) -> list[EntryCheck]:
        return [entry for entry in self.entries if entry.status == status]

    @property
    def ok(self) -> list[EntryCheck]:
        """Complete entries found intact."""
        return self._with("ok")

    @property
    def bad(self) -> list[EntryCheck]:
        """Complete entries found damaged, each with its reasons."""
        return self._with("bad")

    @property
    def incomplete(self) -> list[EntryCheck]:
        """Entries not marked complete: listed, not counted as damage."""
        return self._with("incomplete")

    @property
    def without_checksum(self) -> list[EntryCheck]:
        """Complete entries written before checksums existed, checked without one."""
        return [entry for entry in self.entries if entry.checksum == "absent"]

    @property
    def clean(self) -> bool:
        """Whether no complete entry is damaged."""
        return not self.bad

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable values."""
        return {
            "root": self.root,
            "clean": self.clean,
            "counts": {"ok": len(self.ok), "bad": len(self.bad), "incomplete": len(self.incomplete),
                       "without_checksum": len(self.without_checksum)},
            "entries": [asdict(entry) for entry in self.entries],
        }


def verify_store(root: str) -> VerifyReport:
    """Check every complete entry of the store at ``root`` (see the module's description).

    Parameters
    ----------
    root
        A local folder, ``file://`` URL or any fsspec URL.

    Returns
    -------
    VerifyReport
        One verdict per entry, tiling entries first.

    Raises
    ------
    WSIPipelineError
        When ``root`` is not a feature store.
    """
    infos = list_entries(root)
    store = open_store(root)
    tilings = {(info.tiling_id, info.slide): info for info in infos if info.kind == "tiling"}
    checks = []
    for info in infos:
        if info.error is not None:
            checks.append(EntryCheck(info.key, info.kind, "bad", [f"{info.error}: cannot tell whether it is complete"]))
            continue
        if not info.complete:
            notes = ["not marked complete: ignored by readers"]
            invalidated = info.attrs.get("invalidated")
            if isinstance(invalidated, dict) and "reason" in invalidated:
                notes.append(f"invalidated: {invalidated['reason']}")
            checks.append(EntryCheck(info.key, info.kind, "incomplete", notes=notes))
            continue
        check = EntryCheck(info.key, info.kind, "ok")
        group = store[info.key]
        if info.kind == "tiling":
            _check_tiling(group, info, check)
        else:
            _check_features(group, info, tilings.get((info.tiling_id, info.slide)), check)
        if check.reasons:
            check.status = "bad"
        checks.append(check)
    return VerifyReport(str(root), checks)


def invalidate_bad(report: VerifyReport) -> dict[str, str | None]:
    """Mark every bad entry of ``report`` incomplete, with its reasons: the next run rebuilds it.

    Each is marked under its write lock (:meth:`FeatureStore.invalidate`), so a run writing
    the same entry meanwhile is waited for. An imported entry has no slide for a run to rebuild
    it from: import it again.

    Returns
    -------
    dict
        Bad entry key -> None when it was marked, or why it could not be (attrs that cannot be
        written: delete its folder instead).
    """
    store = FeatureStore(report.root)
    outcome: dict[str, str | None] = {}
    for check in report.bad:
        try:
            with entry_lock(store.root, check.key):
                store.invalidate(check.key, "store verify: " + "; ".join(check.reasons))
            outcome[check.key] = None
        except Exception as error:  # noqa: BLE001 - reported per entry; the others are still marked
            outcome[check.key] = f"{type(error).__name__}: {error}"
    return outcome


def _check_tiling(group: zarr.Group, info: EntryInfo, check: EntryCheck) -> None:
    attrs = info.attrs
    n = _count(attrs, "n_tiles", check)
    strict = "coords_sha256" in attrs
    expected: dict[str, tuple[int, ...] | None] = {"coords": None if n is None else (n, 2)}
    for name in attrs.get("columns", ["tissue_fraction"]):
        expected[name] = None if n is None else (n,)
    for name in attrs.get("masks", []):
        expected[f"mask_{name}"] = None  # thumbnail-sized: any shape
    digest = _check_arrays(group, expected, check, strict, hashed=("coords", "int64"))
    _compare_checksum(attrs, "coords_sha256", digest, check)


def _check_features(group: zarr.Group, info: EntryInfo, tiling: EntryInfo | None, check: EntryCheck) -> None:
    attrs = info.attrs
    n, dim = _count(attrs, "n_tiles", check), _count(attrs, "dim", check)
    expected = {"features": None if n is None or dim is None else (n, dim)}
    digest = _check_arrays(group, expected, check, "features_sha256" in attrs, hashed=("features", "float16"))
    _compare_checksum(attrs, "features_sha256", digest, check)
    if tiling is None or not tiling.complete:
        check.reasons.append(f"no complete tiling entry at tiling/{info.tiling_id}/{info.slide}: its rows have no coordinates")
        return
    followed, now = attrs.get("tiling_coords_sha256"), tiling.attrs.get("coords_sha256")  # None: written before either existed
    if n is not None and tiling.rows != n:
        check.reasons.append(f"{n} feature rows but its tiling entry has {tiling.rows} tiles")
    elif followed is not None and now is not None and followed != now:
        check.reasons.append(
            f"computed on other coordinates than tiling/{info.tiling_id}/{info.slide} holds now (that tiling entry was "
            "replaced since): its rows are not those tiles'"
        )


def _count(attrs: dict[str, Any], name: str, check: EntryCheck) -> int | None:
    value = attrs.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        check.reasons.append(f"attr '{name}' is {value!r}, not a count")
        return None
    return value


def _check_arrays(
    group: zarr.Group, expected: dict[str, tuple[int, ...] | None], check: EntryCheck, strict: bool, hashed: tuple[str, str]
) -> str | None:
    """Check the named arrays (and any other in the group); return the hashed array's checksum if all of it read."""
    names = list(expected) + sorted(set(_array_names(group)) - set(expected))
    digest = None
    for name in names:
        node = group.get(name)
        if not isinstance(node, zarr.Array):
            check.reasons.append(f"array '{name}' is missing")
            continue
        shape = expected.get(name)
        if shape is not None and tuple(node.shape) != shape:
            check.reasons.append(f"array '{name}' has shape {tuple(node.shape)} where its attrs give {shape}")
        missing = _missing_chunks(node)
        if missing:
            what = f"array '{name}' lacks {len(missing)} of {node.nchunks} chunk(s) ({_listing(missing)}): those values read as zeros"
            if strict or name in ("features", "coords"):
                check.reasons.append(what)
            else:
                check.notes.append(f"{what}; an entry written before checksums skipped all-zero chunks, so this may be none")
        name_hashed, dtype = hashed
        result = _read_all(node, RowsDigest(dtype) if name == name_hashed else None, check, name)
        if name == name_hashed:
            digest = result
    return digest


def _array_names(group: zarr.Group) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns about folders that are not nodes
        return [name for name, _ in group.arrays()]


def _missing_chunks(array: zarr.Array) -> list[str]:
    """The chunk keys of ``array`` that are not in its store."""
    expected = [array.metadata.encode_chunk_key(coords) for coords in itertools.product(*(range(n) for n in array.cdata_shape))]
    if not expected:
        return []
    prefix = f"{array.store_path.path}/"
    present = {key.removeprefix(prefix) for key in sync(_list_prefix(array.store_path.store, prefix))}
    return [key for key in expected if key not in present]


async def _list_prefix(store: Any, prefix: str) -> list[str]:  # a zarr Store
    return [key async for key in store.list_prefix(prefix)]


def _read_all(array: zarr.Array, digest: RowsDigest | None, check: EntryCheck, name: str) -> str | None:
    """Decode every chunk, a row-slab at a time; feed ``digest``; return it unless a slab failed."""
    if array.ndim == 0:
        slabs: Sequence[tuple[int, int]] = [(0, 0)]
    else:
        step = max(1, int(array.chunks[0]))
        slabs = [(start, min(start + step, array.shape[0])) for start in range(0, array.shape[0], step)]
    failed = False
    for start, stop in slabs:
        try:
            block = array[...] if array.ndim == 0 else array[start:stop]
        except Exception as error:  # noqa: BLE001 - any codec error means a damaged chunk
            check.reasons.append(f"array '{name}' rows {start}-{stop - 1}: a chunk cannot be decoded ({type(error).__name__}: {error})")
            failed = True
            continue
        if digest is not None and not failed:
            digest.update(block)
    return None if digest is None or failed else digest.hexdigest()


def _compare_checksum(attrs: dict[str, Any], name: str, digest: str | None, check: EntryCheck) -> None:
    recorded = attrs.get(name)
    if recorded is None:
        check.checksum = "absent"
        check.notes.append(f"written before checksums: no '{name}', values checked for shape and decoding only")
    elif digest is None:
        check.checksum = None  # unreadable values are already a reason
    elif digest != recorded:
        check.checksum = "mismatch"
        check.reasons.append(f"{name} mismatch: the stored values differ from those written")
    else:
        check.checksum = "verified"


def _listing(keys: list[str], most: int = 3) -> str:
    shown = ", ".join(keys[:most])
    return shown if len(keys) <= most else f"{shown}, ... {len(keys) - most} more"
