"""Sources by name: built-in adapters plus any a package registers as an entry point.

A third-party package adds a source by declaring, in its ``pyproject.toml``::

    [project.entry-points."wsi_pipeline.sources"]
    myformat = "my_package.reader:open_my_format"

where ``open_my_format(path, mpp_override=None, read_options=None)`` returns an object meeting
:class:`~wsi_pipeline.sources.protocol.TileSource` (``read_options`` is a
:class:`~wsi_pipeline.sources.protocol.ReadOptions`; a source may ignore what it cannot use). Names registered in code (tests, notebooks)
with :func:`register_source` win over entry points of the same name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import ReadOptions, TileSource

ENTRY_POINT_GROUP = "wsi_pipeline.sources"

#: ``factory(path, mpp_override=None, read_options=None) -> TileSource``.
SourceFactory = Callable[..., TileSource]


def _open_wsi(path: str | Path, mpp_override: float | None = None, read_options: ReadOptions | None = None) -> TileSource:
    # Imported on use: OpenSlide loads a native library that a source-less caller need not pay for.
    from wsi_pipeline.sources.wsi import OpenSlideSource

    return OpenSlideSource(path, mpp_override=mpp_override, read_options=read_options)


_BUILTIN: dict[str, SourceFactory] = {"wsi": _open_wsi}
_REGISTERED: dict[str, SourceFactory] = {}


def register_source(name: str, factory: SourceFactory) -> None:
    """Register ``factory`` under ``name`` for this process (replacing an earlier one)."""
    _REGISTERED[name] = factory


def unregister_source(name: str) -> None:
    """Forget a source registered with :func:`register_source` (no-op when absent)."""
    _REGISTERED.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def source_names() -> list[str]:
    """Every source name available: built-in, entry points, registered in code."""
    return sorted({*_BUILTIN, *_entry_points(), *_REGISTERED})


def get_source_factory(name: str, where: str = "modality") -> SourceFactory:
    """Return the factory registered as ``name``.

    Raises
    ------
    WSIPipelineError
        When no source has that name; the message suggests the closest names.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _BUILTIN[name]
    points = _entry_points()
    if name in points:
        try:
            return points[name].load()
        except Exception as error:  # noqa: BLE001 - a broken plug-in must name itself
            raise WSIPipelineError(
                f"the source '{name}' is registered by entry point '{points[name].value}' but cannot be loaded "
                f"({type(error).__name__}: {error})",
                where=where,
                fix=f"reinstall the package that provides it, or choose another of: {', '.join(source_names())}",
            ) from None
    close = difflib.get_close_matches(name, source_names(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise WSIPipelineError(
        f"unknown image source '{name}'.{hint}",
        where=where,
        fix=f"use one of: {', '.join(source_names())} (packages add more through the '{ENTRY_POINT_GROUP}' entry points)",
    )


def open_source(
    name: str, path: str | Path, mpp_override: float | None = None, read_options: ReadOptions | None = None
) -> TileSource:
    """Open ``path`` with the source registered as ``name``.

    Parameters
    ----------
    name
        A source name (``wsi`` for OpenSlide formats).
    path
        The image file.
    mpp_override
        Level-0 µm/px to use instead of the metadata (the cohort table's ``mpp`` column).
    read_options
        How tiles are read (reader, threads, decoder); default :class:`ReadOptions`.

    Returns
    -------
    TileSource
        The open source; use it as a context manager to close it.
    """
    factory = get_source_factory(name)
    if read_options is None:  # sources written before read options existed keep working
        return factory(path, mpp_override=mpp_override)
    return factory(path, mpp_override=mpp_override, read_options=read_options)
