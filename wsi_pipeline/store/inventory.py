"""What a feature store holds: every tiling and feature entry, complete or not, with its provenance.

Entries sit at fixed depths (see :mod:`~wsi_pipeline.store.feature_store`)::

    tiling/<tiling_id>/<slide_entry>
    features/<encoder_id>/<tiling_id>/<slide_entry>

Only those two trees are walked, so ``.locks/`` and any other file at the store root are never
looked at; inside them, a name that is not a Zarr group (a stray file, an array where a group
belongs) is skipped. Works on a local folder and on any fsspec URL, through Zarr.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import zarr
from zarr.core.sync import sync

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.store.claims import local_root

#: Where a user is sent when the path given is not a store.
STORE_FIX = "give the store folder or URL (the manifest's 'store', default <output>/store)"


@dataclass(frozen=True)
class EntryInfo:
    """One store entry as listed.

    Attributes
    ----------
    kind
        ``"tiling"`` or ``"features"``.
    key
        The entry's group path in the store (``features/<encoder>/<tiling>/<slide>``).
    encoder_id
        The encoder's store id; None for a tiling entry.
    tiling_id
        The tiling's store id.
    slide
        The slide entry name (content uid and µm/px, or an imported file's name).
    slide_id
        The slide id the entry was written for, when its attrs say.
    rows
        Tiles (rows) of the entry: its ``n_tiles``, else its main array's length.
    dim
        Feature dimension (None for a tiling entry).
    complete
        Whether the entry is marked complete (readers ignore the others).
    attrs
        Every attribute of the entry (its provenance).
    error
        Why the entry's metadata could not be read, if it could not (then it counts as incomplete).
    """

    kind: str
    key: str
    encoder_id: str | None
    tiling_id: str
    slide: str
    slide_id: str | None
    rows: int | None
    dim: int | None
    complete: bool
    attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-serialisable values."""
        return asdict(self)


def open_store(root: str) -> zarr.Group:
    """Open the feature store at ``root`` read-only.

    Raises
    ------
    WSIPipelineError
        When nothing is there, or what is there is not a Zarr store.
    """
    folder = local_root(str(root))
    if folder is not None and not folder.exists():
        raise WSIPipelineError("no feature store here: the folder does not exist", where=str(root), fix=STORE_FIX)
    try:
        # A file:// URL opens as its local folder, as FeatureStore does.
        return zarr.open_group(str(folder) if folder is not None else str(root), mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError):
        raise WSIPipelineError(
            "not a feature store: no Zarr group (zarr.json) at this location", where=str(root), fix=STORE_FIX
        ) from None
    except (ValueError, OSError) as error:
        raise WSIPipelineError(f"cannot open the feature store ({error})", where=str(root), fix=STORE_FIX) from None


def child_groups(group: zarr.Group) -> Iterator[tuple[str, zarr.Group | None, str | None]]:
    """Yield ``(name, group, error)`` for each child group of ``group``, in name order.

    Names are listed from the store rather than through ``Group.members()``, so one child whose
    metadata cannot be read does not hide its siblings: it is yielded as ``(name, None, why)``.
    Hidden names, stray files and arrays are skipped.
    """
    store, prefix = group.store, group.path
    base = f"{prefix}/" if prefix else ""
    names = sorted(sync(_list_dir(store, prefix)))
    for name in names:
        if name.startswith(".") or name == "zarr.json":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zarr warns about folders that are not nodes
                node = group.get(name)
        except (ValueError, OSError, KeyError, TypeError) as error:
            if sync(store.exists(f"{base}{name}/zarr.json")):
                yield name, None, f"metadata unreadable ({type(error).__name__}: {error})"
            continue
        if isinstance(node, zarr.Group):
            yield name, node, None


async def _list_dir(store: Any, prefix: str) -> list[str]:  # a zarr Store
    return [name async for name in store.list_dir(prefix)]


def list_entries(root: str) -> list[EntryInfo]:
    """List every tiling and feature entry of the store at ``root``, complete or not.

    Parameters
    ----------
    root
        A local folder, ``file://`` URL or any fsspec URL.

    Returns
    -------
    list of EntryInfo
        Tiling entries first, then feature entries, each sorted by key.

    Raises
    ------
    WSIPipelineError
        When ``root`` is not a feature store.
    """
    store = open_store(root)
    entries = []
    tiling = _subgroup(store, "tiling")
    if tiling is not None:
        for tiling_id, tiling_group, _ in child_groups(tiling):
            if tiling_group is None:
                continue
            for slide, group, error in child_groups(tiling_group):
                entries.append(_entry_info("tiling", None, tiling_id, slide, group, error))
    features = _subgroup(store, "features")
    if features is not None:
        for encoder_id, encoder_group, _ in child_groups(features):
            if encoder_group is None:
                continue
            for tiling_id, tiling_group, _ in child_groups(encoder_group):
                if tiling_group is None:
                    continue
                for slide, group, error in child_groups(tiling_group):
                    entries.append(_entry_info("features", encoder_id, tiling_id, slide, group, error))
    return entries


def _subgroup(store: zarr.Group, name: str) -> zarr.Group | None:
    try:
        node = store.get(name)
    except (ValueError, OSError, KeyError):
        return None
    return node if isinstance(node, zarr.Group) else None


def _entry_info(
    kind: str, encoder_id: str | None, tiling_id: str, slide: str, group: zarr.Group | None, error: str | None
) -> EntryInfo:
    key = f"tiling/{tiling_id}/{slide}" if kind == "tiling" else f"features/{encoder_id}/{tiling_id}/{slide}"
    if group is None:
        return EntryInfo(kind, key, encoder_id, tiling_id, slide, None, None, None, False, {}, error)
    attrs = dict(group.attrs)
    rows, dim = attrs.get("n_tiles"), attrs.get("dim") if kind == "features" else None
    if rows is None or (kind == "features" and dim is None):
        # Attrs are written last: an interrupted entry has its array but not yet its counts.
        shape = _shape(group, "coords" if kind == "tiling" else "features")
        if shape:
            rows = shape[0] if rows is None else rows
            if kind == "features" and dim is None and len(shape) > 1:
                dim = shape[1]
    return EntryInfo(
        kind=kind,
        key=key,
        encoder_id=encoder_id,
        tiling_id=tiling_id,
        slide=slide,
        slide_id=attrs.get("slide_id"),
        rows=None if rows is None else int(rows),
        dim=None if dim is None else int(dim),
        complete=attrs.get("complete") is True,
        attrs=attrs,
    )


def _shape(group: zarr.Group, name: str) -> tuple[int, ...] | None:
    try:
        node = group.get(name)
    except (ValueError, OSError, KeyError):
        return None
    return tuple(node.shape) if isinstance(node, zarr.Array) else None
