"""What the encoder registry holds, and whether each entry's weights are on this machine."""

from __future__ import annotations

from typing import Any

from wsi_pipeline.features.registry import ENCODERS
from wsi_pipeline.features.weights import weights_found


def list_models(include_benchmarks: bool = False) -> list[dict[str, Any]]:
    """One record per registered encoder: its card (dim, input size, interpolation, crop, mean and
    std, output rule, recommended µm/px and tile size, weight files and repository) plus
    ``weights``: where its checkpoint was found, ``"none needed"``, or ``None`` (not here).

    Nothing is downloaded or built; the Hugging Face cache is only looked up.
    """
    from wsi_pipeline.features import encoders  # noqa: F401 - registers the built-in entries

    return [
        {**spec.card(), "weights": weights_found(spec)}
        for name, spec in sorted(ENCODERS.items())
        if include_benchmarks or not name.startswith("bench-")
    ]
