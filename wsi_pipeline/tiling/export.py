"""``wsi-pipeline tiles export``: a quick look at what the tile stage would feed the encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.config.workflow import TilingConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import MPP_FIX_COHORT, require_mpp
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.tiling.slide_tiling import tile_slide

#: Tiles per row of the contact sheet, and the label band under each tile.
SHEET_COLUMNS = 8
LABEL_PX = 14


@dataclass(frozen=True)
class TileExport:
    """What ``export_tiles`` wrote."""

    tiles: list[Path]
    contact_sheet: Path
    n_kept: int
    effective_mpp: float


def export_tiles(
    path: str | Path,
    n: int,
    output: str | Path,
    *,
    mpp: float | str = 0.5,
    tile_px: int = 256,
    slide_mpp: float | None = None,
    source_name: str = "wsi",
    mpp_fix: str = MPP_FIX_COHORT,
) -> TileExport:
    """Tile a slide with the default tissue method and write ``n`` tissue tiles as PNG plus a contact sheet.

    The tiles are spread over the slide: every k-th kept tile in grid order, so a quick look
    sees all of the tissue rather than its first rows.

    Parameters
    ----------
    path
        The slide.
    n
        Tiles to write (fewer when the slide keeps fewer).
    output
        Folder for ``tile_<i>_x<X>_y<Y>.png`` (level-0 corner) and ``contact_sheet.png``.
    mpp, tile_px
        Target µm/px (or a magnification such as ``"20x"``) and tile size.
    slide_mpp
        Level-0 µm/px overriding (or replacing missing) metadata.
    source_name
        The source that reads the slide.
    mpp_fix
        How the caller's user supplies a missing µm/px (named in the error).

    Raises
    ------
    WSIPipelineError
        On an unreadable slide, a slide without µm/px and no ``slide_mpp``, or bad arguments.
    """
    if n < 1:
        raise WSIPipelineError(f"--n must be at least 1, got {n}", where="tiles export", fix="ask for 1 or more tiles")
    try:
        config = TilingConfig(mpp=mpp, tile_px=tile_px)
    except ValueError as error:
        raise WSIPipelineError(f"invalid tiling settings: {error}", where="tiles export", fix="use e.g. --mpp 0.5 --tile-px 256") from None
    output = Path(output)
    with open_source(source_name, path, slide_mpp) as source:
        require_mpp(source, fix=mpp_fix)
        tiling = tile_slide(source, config)
        picks = np.unique(np.linspace(0, len(tiling.coords) - 1, num=min(n, len(tiling.coords))).round().astype(int)) if len(tiling.coords) else np.zeros(0, int)
        coords = tiling.coords[picks]
        tiles = np.concatenate(list(source.read_tiles(coords, tiling.geometry.size_level0, tile_px, 32))) if len(coords) else np.zeros((0, tile_px, tile_px, 3), np.uint8)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for i, ((x, y), tile) in enumerate(zip(coords, tiles)):
        target = output / f"tile_{i:04d}_x{x}_y{y}.png"
        with atomic_path(target) as tmp:
            Image.fromarray(tile).save(tmp, format="PNG")
        written.append(target)
    sheet = output / "contact_sheet.png"
    with atomic_path(sheet) as tmp:
        contact_sheet(tiles, [f"x{x} y{y}" for x, y in coords]).save(tmp, format="PNG")
    return TileExport(written, sheet, len(tiling.coords), tiling.geometry.mpp)


def contact_sheet(tiles: np.ndarray, labels: list[str], columns: int = SHEET_COLUMNS) -> Image.Image:
    """Lay tiles out in a grid, each with its label underneath.

    Parameters
    ----------
    tiles
        (N, S, S, 3) uint8.
    labels
        One per tile.
    columns
        Tiles per row.

    Returns
    -------
    PIL.Image.Image
        RGB; a blank label-height strip when there are no tiles.
    """
    if len(tiles) == 0:
        return Image.new("RGB", (256, LABEL_PX), "white")
    side = tiles.shape[1]
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * side, rows * (side + LABEL_PX)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        left, top = (i % cols) * side, (i // cols) * (side + LABEL_PX)
        sheet.paste(Image.fromarray(tile), (left, top))
        draw.text((left + 2, top + side + 1), label, fill=(0, 0, 0), font=font)
    return sheet
