"""What a slide is, as plain data: the ``wsi-pipeline slide info`` view of a source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsi_pipeline.sources.registry import open_source


def slide_info(path: str | Path, source_name: str = "wsi") -> dict[str, Any]:
    """Open a slide and describe it.

    Parameters
    ----------
    path
        The slide file.
    source_name
        The registered source that reads it.

    Returns
    -------
    dict
        ``path``, ``source``, ``vendor``, ``dimensions`` [w, h], ``level_count``,
        ``level_dimensions``, ``level_downsamples``, ``mpp`` (None when unknown),
        ``objective_power`` (None when unknown), and ``uid`` (the store's content fingerprint).

    Raises
    ------
    WSIPipelineError
        When the file is missing or unreadable.
    """
    with open_source(source_name, path) as source:
        return {
            "path": str(source.path),
            "source": source_name,
            "vendor": source.vendor,
            "dimensions": list(source.dimensions),
            "level_count": len(source.level_dimensions),
            "level_dimensions": [list(d) for d in source.level_dimensions],
            "level_downsamples": [round(d, 6) for d in source.level_downsamples],
            "mpp": source.metadata_mpp,
            "objective_power": source.objective_power,
            "uid": source.uid,
        }
