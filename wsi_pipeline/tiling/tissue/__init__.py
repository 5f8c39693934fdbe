"""Tissue segmentation at thumbnail scale, by named methods.

Built-in methods (registered on import): ``auto`` (brightfield or fluorescence, with pen, padding
and debris removal; the default), ``otsu_saturation`` (plain Otsu on saturation) and ``model``
(a TorchScript segmentation model). A plug-in adds one with `register_tissue_method`.

Modules: `base` (the `TissueMap` result, the registry, `segment_tissue`), `thumbnail` (the
µm/px to segment at), `brightfield`, `pen`, `fluorescence`, `otsu` (array functions), `auto`,
`model` (the registered methods).
"""

from wsi_pipeline.tiling.tissue.base import (
    TissueMap,
    TissueMethod,
    get_tissue_method,
    register_tissue_method,
    segment_tissue,
    tissue_method_names,
)
from wsi_pipeline.tiling.tissue.brightfield import (
    brightfield_masks,
    glass_intensity,
    optical_density,
    scanner_padding,
)
from wsi_pipeline.tiling.tissue.fluorescence import fluorescence_mask, looks_fluorescent
from wsi_pipeline.tiling.tissue.otsu import otsu_saturation_mask
from wsi_pipeline.tiling.tissue.pen import INK_COLOURS, ink_masks, pen_mask
from wsi_pipeline.tiling.tissue.thumbnail import (
    segmentation_mpp,
    segmentation_thumbnail,
)

# Importing the method modules registers them.
from wsi_pipeline.tiling.tissue import auto as _auto  # noqa: F401  (isort: skip)
from wsi_pipeline.tiling.tissue import model as _model  # noqa: F401  (isort: skip)

__all__ = [
    "INK_COLOURS",
    "TissueMap",
    "TissueMethod",
    "brightfield_masks",
    "fluorescence_mask",
    "get_tissue_method",
    "glass_intensity",
    "ink_masks",
    "looks_fluorescent",
    "optical_density",
    "otsu_saturation_mask",
    "pen_mask",
    "register_tissue_method",
    "scanner_padding",
    "segment_tissue",
    "segmentation_mpp",
    "segmentation_thumbnail",
    "tissue_method_names",
]
