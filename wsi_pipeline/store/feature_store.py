"""The Zarr feature store: tile coordinates and features per slide, with provenance.

Layout (Zarr v3, local path or any fsspec URL)::

    <store>/tiling/<tiling_id>/<slide_entry>/                  coords (N,2) int64, per-tile QC columns (N,),
                                                               tissue/pen masks at thumbnail scale
    <store>/features/<encoder_id>/<tiling_id>/<slide_entry>/   features (N,D) float16

``slide_entry`` is the slide's content uid joined with the level-0 µm/px the tiles were placed
with (see :func:`slide_entry`), so a µm/px override can never leave old tiles or features behind.

An entry counts only once its attrs say ``complete: true``, which is written last; an entry left
incomplete by a crash is wiped and rewritten by the next writer and ignored by readers. Writers
of one entry take turns (:meth:`FeatureStore.claim`): the first computes it, the others reuse it.

Integrity: a complete entry carries the SHA-256 of its values (``features_sha256`` over the
float16 rows in row order, ``coords_sha256`` over the int64 coordinates; see
:mod:`~wsi_pipeline.store.checksum`), and every chunk of its arrays is written, even an all-zero
one that Zarr would otherwise skip, so a chunk file missing from the store is always damage
(``wsi-pipeline store verify`` checks both).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import wsi_pipeline
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.store.checksum import RowsDigest, rows_sha256
from wsi_pipeline.store.claims import ClaimLost, entry_lock, local_root, still_held

FEATURE_ROWS_PER_CHUNK = 1024

#: Array settings of every stored array: Zarr skips writing a chunk that holds only the fill value
#: (zeros), which a reader cannot tell from a chunk file lost later; writing them all makes any
#: missing chunk a sign of damage.
EVERY_CHUNK = {"write_empty_chunks": True}


@dataclass(frozen=True)
class TilingEntry:
    """A slide's tile grid as stored.

    Attributes
    ----------
    coords
        (N, 2) int64 level-0 top-left corners.
    columns
        Per-tile QC columns, each (N,) float32 (``tissue_fraction``, ``pen_fraction``,
        ``background_fraction``, ``blur`` for entries written by the tile stage).
    attrs
        Provenance and per-slide summary.
    """

    coords: np.ndarray
    columns: dict[str, np.ndarray]
    attrs: dict[str, Any]

    @property
    def tissue_fraction(self) -> np.ndarray:
        """(N,) tissue fraction of each tile."""
        return self.columns["tissue_fraction"]


@dataclass(frozen=True)
class FeatureEntry:
    """A slide's tile features as stored."""

    features: np.ndarray
    attrs: dict[str, Any]


def slide_entry(slide_uid: str, slide_mpp: float) -> str:
    """Return the store name of a slide scanned (or overridden) at ``slide_mpp`` µm/px.

    Coordinates and features depend on the µm/px the grid was laid with, so it is part of the
    key: a slide whose ``mpp`` override changes gets new entries, never the old ones.
    """
    return f"{slide_uid}_{slide_mpp:.6g}um"


def tiling_key(tiling_id: str, slide_uid: str) -> str:
    """Return the group path of a slide's tiling entry."""
    return f"tiling/{tiling_id}/{slide_uid}"


def features_key(encoder_id: str, tiling_id: str, slide_uid: str) -> str:
    """Return the group path of a slide's feature entry."""
    return f"features/{encoder_id}/{tiling_id}/{slide_uid}"


def refuse_if_claim_lost(root: str, key: str) -> None:
    """Raise :class:`ClaimLost` instead of marking an entry complete whose lease another writer took."""
    if key and not still_held(root, key):
        raise ClaimLost(f"not marking '{key}' complete: another writer took over its lease")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class FeatureWriter:
    """Writes a feature entry block by block, and marks it complete last.

    Rows are held until a whole Zarr chunk of them is there, so every chunk is compressed and
    written once: writing each 64-row batch straight into a 1024-row chunk would read, decompress
    and rewrite that chunk 16 times.
    """

    def __init__(self, group: zarr.Group, n_rows: int, root: str = "", key: str = "") -> None:
        self._group = group
        self._root, self._key = root, key
        self._array = group["features"].with_config(EVERY_CHUNK)
        self._n_rows = n_rows
        self._chunk_rows = int(self._array.chunks[0])
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._written = 0  # rows accepted
        self._flushed = 0  # rows in the array
        # Fed with each block as it is flushed, in row order: the checksum costs no second read.
        self._digest = RowsDigest("float16")

    def write(self, rows: np.ndarray) -> None:
        """Append the next block of rows (cast to float16); full chunks go to the store."""
        end = self._written + len(rows)
        if end > self._n_rows:
            raise ValueError(f"writing rows {self._written}:{end} past the entry's {self._n_rows} rows")
        self._pending.append(np.asarray(rows, dtype=np.float16))
        self._pending_rows += len(rows)
        self._written = end
        if self._pending_rows >= self._chunk_rows:
            self._flush(whole_chunks=True)

    def _flush(self, whole_chunks: bool) -> None:
        if not self._pending_rows:
            return
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n = (len(block) // self._chunk_rows) * self._chunk_rows if whole_chunks else len(block)
        if n:
            self._array[self._flushed : self._flushed + n] = block[:n]
            self._digest.update(block[:n])
            self._flushed += n
        self._pending = [block[n:]] if n < len(block) else []
        self._pending_rows = len(block) - n

    def complete(self, **attrs: Any) -> None:
        """Write the last rows and mark the entry complete once every row is there.

        ``attrs`` are added first, with ``features_sha256``, the checksum of the rows written.
        """
        if self._written != self._n_rows:
            raise RuntimeError(f"only {self._written} of {self._n_rows} rows written; not marking complete")
        self._flush(whole_chunks=False)
        refuse_if_claim_lost(self._root, self._key)
        self._group.attrs.update({**attrs, "features_sha256": self._digest.hexdigest(), "completed_at": _now()})
        self._group.attrs["complete"] = True


class FeatureStore:
    """A feature store rooted at a local folder or fsspec URL.

    Parameters
    ----------
    root
        The store location; created on first write.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)

    def _open(self, mode: str = "a") -> zarr.Group:
        # A file:// URL is opened as the local folder it names: zarr's fsspec store reports a
        # missing local key as FileNotFoundError where zarr expects KeyError, and it is slower.
        folder = local_root(self.root)
        try:
            return zarr.open_group(str(folder) if folder is not None else self.root, mode=mode)
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):  # no folder; a folder without a store
            raise WSIPipelineError(
                "feature store not found", where=self.root, fix="run the tile stage first, or check the store path"
            ) from None

    def prepare(self, *prefixes: str) -> None:
        """Create the parent groups of entries before parallel writers start.

        Concurrent workers then only create their own slide groups, never the shared parents.
        """
        group = self._open("a")
        for prefix in prefixes:
            group.require_group(prefix)

    def _entry(self, key: str) -> zarr.Group | None:
        try:
            node = self._open("r").get(key)
        except (WSIPipelineError, FileNotFoundError, ValueError, KeyError):
            return None
        return node if isinstance(node, zarr.Group) else None

    def is_complete(self, key: str) -> bool:
        """Return whether the entry at ``key`` exists and was marked complete."""
        return self.complete_attrs(key) is not None

    def complete_attrs(self, key: str) -> dict[str, Any] | None:
        """The attrs of the entry at ``key`` when it is complete, else None (:meth:`is_complete` and :meth:`attrs` in one read)."""
        group = self._entry(key)
        try:
            attrs = None if group is None else dict(group.attrs)
        except (ValueError, OSError):  # attrs half-written by a killed writer
            return None
        return attrs if attrs is not None and attrs.get("complete") is True else None

    @contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """Claim the right to write entry ``key``; yields whether the caller must write it.

        Yields False at once when the entry is complete. Otherwise waits for the entry's write
        lock (see :mod:`~wsi_pipeline.store.claims`), then yields False if another writer
        completed it meanwhile (reuse it) and True if the caller must compute and write it,
        holding the lock until the block ends. Use::

            with store.claim(tiling_key(tid, entry)) as must_write:
                if must_write:
                    ...  # compute, write, mark complete
        """
        if self.is_complete(key):
            yield False
            return
        with entry_lock(self.root, key):
            yield not self.is_complete(key)

    def attrs(self, key: str) -> dict[str, Any]:
        """Return an entry's attrs (empty when absent)."""
        group = self._entry(key)
        return {} if group is None else dict(group.attrs)

    # -- tiling ---------------------------------------------------------------------------------
    def write_tiling(
        self,
        tiling_id: str,
        slide_uid: str,
        coords: np.ndarray,
        columns: Mapping[str, np.ndarray],
        attrs: dict[str, Any],
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write a slide's tile grid, replacing any incomplete entry, and mark it complete last.

        Parameters
        ----------
        tiling_id, slide_uid
            The entry's keys (``slide_uid`` is the slide entry name, see :func:`slide_entry`).
        coords
            (N, 2) level-0 top-left corners.
        columns
            Per-tile values, each of length N (stored as float32).
        attrs
            Provenance and summary; ``n_tiles``, ``columns``, ``masks`` and ``coords_sha256`` (the
            coordinates' checksum) are added.
        masks
            Thumbnail-scale boolean masks (``tissue``, ``pen``) kept for QC pictures and contours.
        """
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        group = self._open("a").create_group(tiling_key(tiling_id, slide_uid), overwrite=True)
        chunk = max(1, min(len(coords), 65536))
        group.create_array("coords", shape=coords.shape, dtype="int64", chunks=(chunk, 2), config=EVERY_CHUNK)[...] = coords
        for name, values in columns.items():
            values = np.asarray(values, dtype=np.float32).reshape(-1)
            if len(values) != len(coords):
                raise ValueError(f"column '{name}' has {len(values)} values for {len(coords)} tiles")
            group.create_array(name, shape=values.shape, dtype="float32", chunks=(chunk,), config=EVERY_CHUNK)[...] = values
        for name, mask in (masks or {}).items():
            mask = np.asarray(mask, dtype=bool)
            group.create_array(f"mask_{name}", shape=mask.shape, dtype="bool", chunks=mask.shape, config=EVERY_CHUNK)[...] = mask
        group.attrs.update(
            {
                **attrs,
                "n_tiles": len(coords),
                "columns": list(columns),
                "masks": list(masks or {}),
                "coords_sha256": rows_sha256(coords, "int64"),
                "package_version": wsi_pipeline.__version__,
                "created": _now(),
            }
        )
        refuse_if_claim_lost(self.root, tiling_key(tiling_id, slide_uid))
        group.attrs["complete"] = True

    def read_tiling(self, tiling_id: str, slide_uid: str) -> TilingEntry:
        """Read a complete tiling entry."""
        group = self._complete_group(tiling_key(tiling_id, slide_uid), "tiling")
        attrs = dict(group.attrs)
        columns = {name: group[name][...] for name in attrs.get("columns", ["tissue_fraction"])}
        return TilingEntry(group["coords"][...], columns, attrs)

    def read_tiling_masks(self, tiling_id: str, slide_uid: str) -> dict[str, np.ndarray]:
        """Read the thumbnail-scale masks of a complete tiling entry (``tissue``, ``pen``)."""
        group = self._complete_group(tiling_key(tiling_id, slide_uid), "tiling")
        return {name: group[f"mask_{name}"][...] for name in group.attrs.get("masks", [])}

    # -- features -------------------------------------------------------------------------------
    def begin_features(
        self, encoder_id: str, tiling_id: str, slide_uid: str, n_rows: int, dim: int, attrs: dict[str, Any]
    ) -> FeatureWriter:
        """Start a feature entry (wiping an incomplete one); rows are written through the writer.

        The entry records the ``coords_sha256`` of the tiling entry its rows follow
        (``tiling_coords_sha256``), when that entry is complete: ``store verify`` then tells
        features computed on other coordinates (a tiling replaced since) from good ones.
        """
        tiling = self.attrs(tiling_key(tiling_id, slide_uid))
        follows = {"tiling_coords_sha256": tiling["coords_sha256"]} if tiling.get("complete") is True and "coords_sha256" in tiling else {}
        group = self._open("a").create_group(features_key(encoder_id, tiling_id, slide_uid), overwrite=True)
        group.create_array(
            "features",
            shape=(n_rows, dim),
            dtype="float16",
            chunks=(max(1, min(n_rows, FEATURE_ROWS_PER_CHUNK)), dim),
            config=EVERY_CHUNK,
        )
        group.attrs.update(
            {
                **attrs,
                **follows,
                "n_tiles": int(n_rows),
                "dim": int(dim),
                "dtype": "float16",
                "package_version": wsi_pipeline.__version__,
                "created": _now(),
                "complete": False,
            }
        )
        return FeatureWriter(group, n_rows, self.root, features_key(encoder_id, tiling_id, slide_uid))

    def feature_keys_on(self, tiling_id: str, slide_uid: str) -> list[str]:
        """Keys of every encoder's feature entry (complete or not) on the tiling entry ``tiling_id``/``slide_uid``."""
        try:
            features = self._open("r").get("features")
        except WSIPipelineError:
            return []
        if not isinstance(features, zarr.Group):
            return []
        keys = [features_key(encoder_id, tiling_id, slide_uid) for encoder_id in sorted(features.group_keys())]
        return [key for key in keys if self._entry(key) is not None]

    def invalidate(self, key: str, reason: str) -> None:
        """Mark the entry at ``key`` incomplete, recording why: readers then ignore it and the next run writes it again.

        Its arrays stay until then; ``invalidated`` in its attrs holds ``reason`` and the time.
        """
        group = self._open("a")[key]
        group.attrs.update({"complete": False, "invalidated": {"reason": reason, "at": _now()}})

    def read_features(self, encoder_id: str, tiling_id: str, slide_uid: str) -> FeatureEntry:
        """Read a complete feature entry."""
        group = self._complete_group(features_key(encoder_id, tiling_id, slide_uid), "features")
        return FeatureEntry(group["features"][...], dict(group.attrs))

    def _complete_group(self, key: str, what: str) -> zarr.Group:
        if not self.is_complete(key):
            raise WSIPipelineError(
                f"no complete {what} entry at '{key}'",
                where=self.root,
                fix=f"run the stage that writes {what} (an interrupted entry is rewritten on the next run)",
            )
        group = self._entry(key)
        assert group is not None
        return group

    def list_slides(self, prefix: str) -> list[str]:
        """Return the slide uids under ``prefix`` whose entries are complete."""
        group = self._entry(prefix)
        if group is None:
            return []
        return sorted(k for k in group.group_keys() if self.is_complete(f"{prefix}/{k}"))
