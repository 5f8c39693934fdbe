"""The QC picture of one slide: thumbnail, tissue contour, pen areas, kept tiles and a caption.

Plain functions on arrays: the caller reads the slide and the store and passes what to draw.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from wsi_pipeline.atomic import atomic_path

#: Colours of the picture (RGB). The tissue blue and pen magenta match the GeoJSON classes.
TISSUE_RGB: tuple[int, int, int] = (30, 60, 220)
PEN_RGB: tuple[int, int, int] = (230, 0, 230)
TILE_RGB: tuple[int, int, int] = (20, 160, 60)
CAPTION_BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)
CAPTION_TEXT_RGB: tuple[int, int, int] = (0, 0, 0)

_CONTOUR_PX = 2  # tissue contour thickness in picture pixels
_HATCH_PERIOD = 8  # pen hatching: a diagonal line every 8 picture pixels...
_HATCH_WIDTH = 2  # ...2 pixels wide, so the ink under it stays visible
_MIN_FONT_PX = 11


def qc_picture(
    thumbnail: np.ndarray,
    thumbnail_scale: float,
    tissue: np.ndarray,
    mask_scale: float,
    coords: np.ndarray,
    size_level0: float,
    *,
    pen: np.ndarray | None = None,
    caption: Sequence[str] = (),
    long_side: int = 1000,
) -> Image.Image:
    """Draw the tiling of one slide for a person to judge at a glance.

    The thumbnail is resized so that its long side is ``long_side`` pixels (small thumbnails are
    upscaled: a 150-pixel thumbnail is too small to judge a contour on), then, in this order:
    pen areas hatched in magenta with a magenta outline, the kept tiles' boxes in green (1 px),
    the tissue contour in blue (2 px, inside the tissue, drawn last so that a dense grid of
    tiles does not hide it), and a white caption band below the slide with ``caption``'s lines.

    Parameters
    ----------
    thumbnail
        (H, W, 3) uint8 RGB picture of the whole slide ((H, W) grey or RGBA are converted).
    thumbnail_scale
        Level-0 pixels per thumbnail pixel.
    tissue
        (h, w) bool tissue mask at ``mask_scale``; it may be coarser or finer than the thumbnail.
    mask_scale
        Level-0 pixels per mask pixel (for ``tissue`` and ``pen``).
    coords
        (N, 2) level-0 (x, y) top-left corners of the kept tiles.
    size_level0
        Tile side in level-0 pixels.
    pen
        Optional (h, w) bool pen-ink mask at ``mask_scale``.
    caption
        Lines written below the slide (slide id, µm/px, tiles kept, tissue area...), already
        formatted by the caller; lines too wide for the picture are wrapped at spaces.
    long_side
        Target long side of the slide part in pixels (the caption band adds height below).

    Returns
    -------
    PIL.Image.Image
        RGB picture: the slide part is ``round(W * f) × round(H * f)`` with
        ``f = long_side / max(W, H)``, then the caption band when ``caption`` is not empty.

    Notes
    -----
    The masks are resampled onto the picture through level-0 coordinates (nearest mask pixel
    under each picture pixel's centre), so a mask whose extent differs from the thumbnail's by
    rounding still lines up. Tile boxes running past the right or bottom slide edge are clipped
    at the picture's edge.
    """
    base = Image.fromarray(np.asarray(thumbnail, dtype=np.uint8)).convert("RGB")
    width, height = base.size
    factor = long_side / max(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # Shrinking needs antialiasing (Lanczos); enlarging must not invent detail: bilinear.
    resample = Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BILINEAR
    picture = base.resize(size, resample=resample)
    # Level-0 pixels per picture pixel, per axis (rounding makes them differ slightly).
    per_px = (thumbnail_scale * width / size[0], thumbnail_scale * height / size[1])

    canvas = np.array(picture)
    tissue_pic = _resample_mask(tissue, mask_scale, size, per_px)
    if pen is not None:
        pen_pic = _resample_mask(pen, mask_scale, size, per_px)
        rows, cols = np.indices(pen_pic.shape)
        hatch = pen_pic & (((rows + cols) % _HATCH_PERIOD) < _HATCH_WIDTH)
        canvas[hatch | _inner_boundary(pen_pic, 1)] = PEN_RGB
    picture = Image.fromarray(canvas)
    _draw_tiles(picture, coords, size_level0, per_px)
    canvas = np.array(picture)
    canvas[_inner_boundary(tissue_pic, _CONTOUR_PX)] = TISSUE_RGB
    picture = Image.fromarray(canvas)
    if caption:
        picture = _add_caption(picture, list(caption), long_side)
    return picture


def save_qc_picture(path: str | os.PathLike[str], picture: Image.Image) -> Path:
    """Save a :func:`qc_picture` as a PNG at ``path`` atomically; return ``path`` as a ``Path``."""
    with atomic_path(path) as tmp:
        # zlib level 3: 2.5x faster than PIL's default 6 on a 1,000 px QC picture, 4% larger.
        picture.save(tmp, format="PNG", compress_level=3)
    return Path(path)


def _resample_mask(mask: np.ndarray, mask_scale: float, size: tuple[int, int], per_px: tuple[float, float]) -> np.ndarray:
    """Return the mask on the picture grid: the mask pixel under each picture pixel's centre."""
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return np.zeros((size[1], size[0]), dtype=bool)
    cols = ((np.arange(size[0]) + 0.5) * per_px[0] / mask_scale).astype(np.intp)
    rows = ((np.arange(size[1]) + 0.5) * per_px[1] / mask_scale).astype(np.intp)
    # A mask a pixel short of the thumbnail (rounding) repeats its last row/column.
    cols = np.minimum(cols, mask.shape[1] - 1)
    rows = np.minimum(rows, mask.shape[0] - 1)
    return mask[np.ix_(rows, cols)]


def _inner_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Return the pixels of ``mask`` within ``width`` pixels of its edge (8-connected).

    The picture frame does not count as an edge (``border_value=1``): tissue cut by the slide
    border is not outlined along the frame, where a line would only hide the picture's edge.
    """
    if not mask.any():
        return mask
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), dtype=bool), iterations=width, border_value=1)
    return mask & ~eroded


def _draw_tiles(picture: Image.Image, coords: np.ndarray, size_level0: float, per_px: tuple[float, float]) -> None:
    """Draw each tile's box (1 px, green) on ``picture`` in place; boxes are clipped at its edges."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if len(coords) == 0:
        return
    x0 = np.floor(coords[:, 0] / per_px[0]).astype(np.int64)
    y0 = np.floor(coords[:, 1] / per_px[1]).astype(np.int64)
    # The box's last pixel is the one holding the tile's last level-0 column / row.
    x1 = np.maximum(np.ceil((coords[:, 0] + size_level0) / per_px[0]).astype(np.int64) - 1, x0)
    y1 = np.maximum(np.ceil((coords[:, 1] + size_level0) / per_px[1]).astype(np.int64) - 1, y0)
    width, height = picture.size
    visible = (x0 < width) & (y0 < height) & (x1 >= 0) & (y1 >= 0)
    draw = ImageDraw.Draw(picture)
    for box in zip(x0[visible].tolist(), y0[visible].tolist(), x1[visible].tolist(), y1[visible].tolist()):
        # PIL clips shapes to the image, so a box past the slide edge loses only its far sides.
        draw.rectangle(box, outline=TILE_RGB, width=1)


def _add_caption(picture: Image.Image, lines: list[str], long_side: int) -> Image.Image:
    """Return ``picture`` with a white band below it holding ``lines`` in black."""
    # About 2 % of the long side (20 px at 1000): readable at a glance, small next to the slide.
    font_px = max(_MIN_FONT_PX, round(long_side / 50))
    font = _caption_font(font_px)
    margin = max(4, font_px // 2)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [piece for line in lines for piece in _wrap(line, font, picture.width - 2 * margin, measure)]
    line_px = round(font_px * 1.3)
    band_px = 2 * margin + line_px * len(wrapped)
    out = Image.new("RGB", (picture.width, picture.height + band_px), CAPTION_BACKGROUND_RGB)
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    for index, text in enumerate(wrapped):
        draw.text((margin, picture.height + margin + index * line_px), text, fill=CAPTION_TEXT_RGB, font=font)
    return out


def _caption_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Return a font of ``size`` pixels that can write ``µ`` and ``²``.

    Pillow's built-in font (``load_default``) has no ``µ`` or ``²``: captions such as
    ``0.25 µm/px`` came out as empty boxes. DejaVu Sans, shipped inside matplotlib (a
    dependency of this package), has them; it is found without importing matplotlib.
    """
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        dejavu = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if dejavu.is_file():
            try:
                return ImageFont.truetype(str(dejavu), size)
            except OSError:  # Pillow built without FreeType
                pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the small bitmap font, still better than no caption
        return ImageFont.load_default()


def _wrap(line: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_px: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Split ``line`` at spaces into pieces no wider than ``max_px`` (a single long word stays whole)."""
    words = line.split(" ")
    pieces: list[str] = []
    current = ""
    for word in words:
        candidate = word if not current else f"{current} {word}"
        if current and draw.textlength(candidate, font=font) > max_px:
            pieces.append(current)
            current = word
        else:
            current = candidate
    pieces.append(current)
    return pieces
