"""A slide's QC files from its stored tiling: the captioned picture and the QuPath contours."""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.sources.protocol import TileSource
from wsi_pipeline.store.feature_store import FeatureStore
from wsi_pipeline.tiling.contours import contours_geojson, write_geojson
from wsi_pipeline.tiling.overlay import qc_picture, save_qc_picture

#: Long side of the QC picture in pixels: large enough to judge tissue and tiles by eye.
PICTURE_LONG_SIDE = 1000


def qc_paths(qc_dir: Path, slide_id: str) -> tuple[Path, Path]:
    """Where a slide's QC picture (PNG) and contours (GeoJSON) go."""
    return qc_dir / f"{slide_id}.png", qc_dir / f"{slide_id}.geojson"


def write_slide_qc(
    source: TileSource,
    store: FeatureStore,
    tiling_id: str,
    entry: str,
    slide_id: str,
    qc_dir: Path,
    *,
    refresh: bool = False,
) -> tuple[Path, Path]:
    """Write ``<qc_dir>/<slide_id>.png`` and ``.geojson`` from the slide's complete tiling entry.

    Everything comes from the store (coordinates, masks, counts) except the picture's
    thumbnail, read from the slide at about :data:`PICTURE_LONG_SIDE` px, so a slide tiled by
    an earlier run gets the same files as one tiled now.

    Parameters
    ----------
    source
        The open slide (for the thumbnail).
    store, tiling_id, entry
        Where the tiling entry is.
    slide_id
        The cohort's name for the slide (file names, caption).
    qc_dir
        Output folder.
    refresh
        Rewrite the files even when both exist (the tiling was just recomputed).

    Returns
    -------
    tuple of Path
        The PNG and GeoJSON paths.
    """
    png, geojson = qc_paths(qc_dir, slide_id)
    if not refresh and png.is_file() and geojson.is_file():
        return png, geojson
    tiling = store.read_tiling(tiling_id, entry)
    masks = store.read_tiling_masks(tiling_id, entry)
    attrs = tiling.attrs
    scale = float(attrs["mask_scale"])
    tissue, pen = masks["tissue"], masks.get("pen")
    width, height = source.dimensions
    mpp = float(attrs["slide_mpp"])
    thumbnail, thumbnail_scale = source.thumbnail(max(mpp, max(width, height) * mpp / PICTURE_LONG_SIDE))
    picture = qc_picture(
        thumbnail,
        thumbnail_scale,
        tissue,
        scale,
        tiling.coords,
        float(attrs["tile_size_level0"]),
        pen=pen,
        caption=caption_lines(slide_id, attrs),
        long_side=PICTURE_LONG_SIDE,
    )
    save_qc_picture(png, picture)
    write_geojson(geojson, contours_geojson(tissue, scale, pen=pen, properties={"slide_id": slide_id}, mpp=mpp))
    return png, geojson


def caption_lines(slide_id: str, attrs: dict) -> list[str]:
    """The QC picture's caption: slide, scale, tiles kept and why others were dropped, areas."""
    width, height = attrs.get("level0_size", (0, 0))
    lines = [
        (f"{slide_id} ({attrs.get('vendor', '?')}, {attrs.get('modality', '?')}): {width:,} x {height:,} px "
        f"at {float(attrs['slide_mpp']):.4g} µm/px ({attrs.get('mpp_source', 'metadata')})"),
        (f"tiles kept: {attrs.get('n_kept', attrs.get('n_tiles', 0)):,} at {float(attrs['effective_mpp']):.4g} µm/px, "
        f"{attrs['tile_px']} px; dropped: {attrs.get('dropped_tissue', 0):,} low tissue, "
        f"{attrs.get('dropped_pen', 0):,} pen, {attrs.get('dropped_blur', 0):,} blurred"),
        (f"tissue {float(attrs.get('tissue_area_mm2', 0.0)):.2f} mm², pen {float(attrs.get('pen_area_mm2', 0.0)):.2f} mm²; "
        f"{attrs.get('n_blurred', 0):,} tiles below the blur flag"),
    ]
    return lines
