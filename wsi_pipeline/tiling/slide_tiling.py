"""Tile one slide: tissue at thumbnail scale, a grid at the target µm/px, per-tile QC, filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsi_pipeline.config.workflow import TilingConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import TileSource, require_mpp
from wsi_pipeline.store.keys import file_sha256, short_hash
from wsi_pipeline.tiling.grid import GridGeometry, grid_coordinates, mask_fractions
from wsi_pipeline.tiling.tile_qc import background_pixels, laplacian_variance
from wsi_pipeline.tiling.tissue import TissueMap, segment_tissue

#: Per-tile QC columns stored beside the coordinates, in this order.
QC_COLUMNS = ("tissue_fraction", "pen_fraction", "background_fraction", "blur")
#: Reasons a grid tile with some tissue is dropped, in the order they are applied.
DROP_REASONS = ("tissue", "pen", "blur")
#: Tiles read at once for the pixel-level QC.
QC_BATCH = 32
#: Bumped when the tiling algorithm changes what comes out, so old store entries are not reused.
ALGORITHM = "grid-v3-edge-tiles-qc"


@dataclass(frozen=True)
class SlideTiling:
    """The kept tiles of one slide, their QC, and what is needed to draw and audit them.

    Attributes
    ----------
    coords
        (N, 2) int64 level-0 top-left corners of the kept tiles.
    qc
        Per kept tile, each (N,) float32: ``tissue_fraction``, ``pen_fraction`` (from the
        thumbnail masks), ``background_fraction`` and ``blur`` (variance of the Laplacian, from
        the tile's pixels at the target resolution).
    geometry
        Tile size, stride, effective µm/px and read level.
    tissue
        The masks at thumbnail scale.
    slide_mpp
        Level-0 µm/px used.
    n_grid_tiles
        Tiles in the full grid (glass included).
    dropped
        Tiles with some tissue dropped, by reason: ``tissue`` (below the minimum fraction),
        ``pen`` (too much ink), ``blur`` (below the minimum blur score).
    n_blurred
        Tiles read whose blur score fell below the flag threshold, kept or not.
    """

    coords: np.ndarray
    qc: dict[str, np.ndarray]
    geometry: GridGeometry
    tissue: TissueMap
    slide_mpp: float
    n_grid_tiles: int
    dropped: dict[str, int] = field(default_factory=dict)
    n_blurred: int = 0

    @property
    def tissue_fraction(self) -> np.ndarray:
        """(N,) tissue fraction of each kept tile."""
        return self.qc["tissue_fraction"]

    @property
    def tissue_area_mm2(self) -> float:
        """Area of the tissue mask in mm²."""
        return mask_area_mm2(self.tissue.tissue, self.tissue.mpp)

    @property
    def pen_area_mm2(self) -> float:
        """Area of the pen mask in mm²."""
        return mask_area_mm2(self.tissue.pen, self.tissue.mpp)

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the store attrs and the cohort QC table."""
        blur = self.qc["blur"]
        return {
            "modality": self.tissue.modality,
            "tissue_area_mm2": round(self.tissue_area_mm2, 4),
            "pen_area_mm2": round(self.pen_area_mm2, 4),
            "n_grid_tiles": int(self.n_grid_tiles),
            "n_kept": len(self.coords),
            **{f"dropped_{reason}": int(self.dropped.get(reason, 0)) for reason in DROP_REASONS},
            "n_blurred": int(self.n_blurred),
            "median_blur": round(float(np.median(blur)), 3) if len(blur) else None,
        }


def mask_area_mm2(mask: np.ndarray, mpp: float) -> float:
    """Area of the True pixels of a mask at ``mpp`` µm/px, in mm²."""
    return float(mask.sum()) * mpp * mpp / 1e6


def tiling_params(config: TilingConfig) -> dict[str, Any]:
    """Return every parameter that changes which tiles come out (what ``tiling_id`` hashes).

    A segmentation model is identified by the sha256 of its file, not its path, so replacing
    the file changes the id and moving it does not.
    """
    params: dict[str, Any] = {"algorithm": ALGORITHM, **config.model_dump(mode="json")}
    model = config.tissue.model
    if config.tissue.method == "model" and model is not None:
        try:
            sha256 = file_sha256(model.path)
        except OSError as error:
            raise WSIPipelineError(
                f"cannot read the tissue segmentation model ({error.strerror or error})",
                where=f"tiling.tissue.model.path: {model.path}",
                fix="give the path of a TorchScript file saved with torch.jit.save",
            ) from None
        params["tissue"]["model"].update(path=None, sha256=sha256)
    return params


def tiling_id(config: TilingConfig) -> str:
    """Return a short readable id of the tiling parameters, e.g. ``0.5um_256px_3f2a9c01bd``."""
    return f"{config.mpp:g}um_{config.tile_px}px_{short_hash(tiling_params(config))}"


def tile_slide(source: TileSource, config: TilingConfig) -> SlideTiling:
    """Segment tissue, lay the grid at the target resolution, measure every tile, apply the filters.

    Parameters
    ----------
    source
        An open source with known µm/px.
    config
        Target µm/px and tolerance, tile size, overlap, tissue method and QC thresholds.

    Returns
    -------
    SlideTiling
        Kept tiles with their QC, the masks, and counts of dropped tiles by reason.

    Notes
    -----
    Only the thumbnail and the tiles with tissue are read, so the cost follows the tissue
    area, not the slide's pixel count.
    """
    slide_mpp = require_mpp(source)
    tissue = segment_tissue(source, config.tissue)
    geometry = GridGeometry.at_resolution(
        slide_mpp, config.mpp, config.tile_px, config.overlap_px, source.level_downsamples, config.mpp_tolerance
    )
    width, height = source.dimensions
    grid = grid_coordinates(width, height, geometry)
    fraction = mask_fractions(tissue.tissue, tissue.scale, grid, geometry.size_level0)
    pen = mask_fractions(tissue.pen, tissue.scale, grid, geometry.size_level0)
    qc_rules = config.qc
    enough = fraction >= max(qc_rules.min_tissue, 1e-6)
    dropped = {"tissue": int(((fraction > 0) & ~enough).sum())}
    clean = enough & (pen <= qc_rules.max_pen)
    dropped["pen"] = int((enough & ~clean).sum())
    candidates = np.flatnonzero(clean)

    background, blur = measure_tiles(source, grid[candidates], geometry, tissue.modality)
    n_blurred = int((blur < qc_rules.blur_flag).sum())
    sharp = np.ones(len(candidates), dtype=bool) if qc_rules.min_blur is None else blur >= qc_rules.min_blur
    dropped["blur"] = int((~sharp).sum())
    kept = candidates[sharp]
    return SlideTiling(
        coords=grid[kept],
        qc={
            "tissue_fraction": fraction[kept],
            "pen_fraction": pen[kept],
            "background_fraction": background[sharp],
            "blur": blur[sharp],
        },
        geometry=geometry,
        tissue=tissue,
        slide_mpp=slide_mpp,
        n_grid_tiles=len(grid),
        dropped=dropped,
        n_blurred=n_blurred,
    )


def measure_tiles(
    source: TileSource, coords: np.ndarray, geometry: GridGeometry, modality: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read tiles at the target resolution and return their background fraction and blur score."""
    background = np.empty(len(coords), dtype=np.float32)
    blur = np.empty(len(coords), dtype=np.float32)
    done = 0
    for batch in source.read_tiles(coords, geometry.size_level0, geometry.tile_px, QC_BATCH):
        pixels = background_pixels(batch, modality)
        background[done : done + len(batch)] = pixels.mean(axis=(1, 2))
        blur[done : done + len(batch)] = laplacian_variance(batch, pixels)
        done += len(batch)
    return background, blur
