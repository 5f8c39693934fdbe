"""The ``wsi`` source: every format OpenSlide 4 reads, behind the tile-source protocol.

Aperio SVS (JPEG and JPEG 2000), Hamamatsu NDPI/VMS, MIRAX, Philips TIFF, Leica SCN, Ventana
BIF, Sakura SVSLIDE, generic tiled TIFF and DICOM WSI all come through ``openslide.OpenSlide``;
this adapter adds what the pipeline needs on top: a physical scale that can be overridden, a
thumbnail at a µm/px that never loads a whole level into memory, tiles read in batches at a
target resolution with antialiasing, and errors that say what to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import openslide
from PIL import Image

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.fingerprint import slide_uid
from wsi_pipeline.sources.protocol import ReadOptions, level_for_downsample, require_mpp
from wsi_pipeline.sources.tile_reader import (
    RegionReader,
    plan_strips,
    read_tiles_in_strips,
    resize_rgb_tensor,
)

#: Pixels of a pyramid level read in one piece for a thumbnail; a larger level is read in blocks
#: so memory follows the thumbnail, not the slide (a flat 150k x 100k TIFF would otherwise need
#: 60 GB).
THUMBNAIL_READ_PIXELS = 2 * 1024 * 1024

#: The raw JPEG path is used only when its pixels differ from OpenSlide's by at most this mean
#: absolute difference (grey levels) on the first strip: both decode with libjpeg-turbo, so a
#: right path agrees to rounding, while a wrong colour transform is off by tens of levels.
RAW_PATH_TOLERANCE = 1.0

#: Pixel sizes are square when x and y agree this closely.
SQUARE_PIXEL_TOLERANCE = 0.01


class OpenSlideSource:
    """An OpenSlide-readable slide as a :class:`~wsi_pipeline.sources.protocol.TileSource`.

    Parameters
    ----------
    path
        The slide file (for DICOM, any file of the series, or the folder holding it).
    mpp_override
        Level-0 µm/px to use instead of the metadata (the cohort table's ``mpp`` column).
    read_options
        How :meth:`read_tiles` reads (default :class:`ReadOptions`).

    Raises
    ------
    WSIPipelineError
        When the file is missing or OpenSlide cannot read it; the message says why and how to fix it.
    """

    def __init__(self, path: str | Path, mpp_override: float | None = None, read_options: ReadOptions | None = None) -> None:
        self.path = resolve_slide_path(Path(path))
        self.read_options = read_options or ReadOptions()
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as error:
            raise unreadable_slide_error(self.path, error) from None
        if mpp_override is not None and not (math.isfinite(mpp_override) and mpp_override > 0):
            raise WSIPipelineError(
                f"µm/px override {mpp_override!r} is not a positive number",
                where=str(self.path),
                fix="give the slide's level-0 µm/px (e.g. 0.25 for 40x, 0.5 for 20x) in the 'mpp' column, or leave it empty",
            )
        self._override = None if mpp_override is None else float(mpp_override)
        self._raw: object | None = None
        self._read_path = ""  # decided on the first read_tiles call
        self._decodes_on_device = False
        self._closers: list = []

    # -- physical scale -------------------------------------------------------------------------
    @cached_property
    def metadata_mpp(self) -> float | None:
        """Level-0 µm/px from the file (OpenSlide's ``openslide.mpp-x``/``-y``), None if unknown or not square."""
        props = self._slide.properties
        try:
            mpp_x = float(props[openslide.PROPERTY_NAME_MPP_X])
            mpp_y = float(props.get(openslide.PROPERTY_NAME_MPP_Y, mpp_x))
        except (KeyError, ValueError):
            return None
        if not (math.isfinite(mpp_x) and mpp_x > 0 and math.isfinite(mpp_y) and mpp_y > 0):
            return None
        if abs(mpp_x - mpp_y) > SQUARE_PIXEL_TOLERANCE * mpp_x:
            return None  # non-square pixels: tiles would be distorted; the user must decide
        return mpp_x

    @property
    def mpp(self) -> float | None:
        """Level-0 µm/px in use: the override, else the metadata, else None."""
        return self._override if self._override is not None else self.metadata_mpp

    @property
    def objective_power(self) -> float | None:
        """Scanning objective magnification (``openslide.objective-power``), None if unknown."""
        try:
            value = float(self._slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    @property
    def vendor(self) -> str:
        """OpenSlide's format name (``aperio``, ``hamamatsu``, ``mirax``, ``dicom``, ``generic-tiff``...)."""
        return self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown")

    # -- geometry -------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return tuple(self._slide.dimensions)  # type: ignore[return-value]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return self._slide.level_count

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of each level relative to level 0."""
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level."""
        return tuple(tuple(d) for d in self._slide.level_dimensions)  # type: ignore[misc]

    @property
    def properties(self) -> Mapping[str, str]:
        """All OpenSlide properties."""
        return dict(self._slide.properties)

    @cached_property
    def uid(self) -> str:
        """Content fingerprint of the slide's file(s) (see :func:`slide_uid`)."""
        return slide_uid(self.path, self.properties, companion_files(self.path, self.vendor))

    def level_for_downsample(self, downsample: float) -> int:
        """Return the coarsest level that is still at least as fine as ``downsample``."""
        return level_for_downsample(self.level_downsamples, downsample)

    # -- pixels ---------------------------------------------------------------------------------
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """Read an RGB region at a level; (x, y) in level-0 px; outside the slide is white."""
        rgba = self._slide.read_region((int(x), int(y)), level, (int(width), int(height)))
        return flatten_on_white(rgba)

    def read_tile(self, x: int, y: int, size_level0: float, out_px: int) -> np.ndarray:
        """Read one square tile of ``size_level0`` level-0 px at (x, y) as ``out_px`` px RGB.

        It is read from the coarsest level at least as fine as wanted, then resized with an
        area (box) filter, which averages every source pixel a target pixel covers: the
        antialiasing that keeps fine texture from aliasing into false patterns. A level whose
        size already matches is returned untouched.
        """
        level = self.level_for_downsample(size_level0 / out_px)
        read_px = max(1, round(size_level0 / self.level_downsamples[level]))
        rgb = self.read_region(x, y, level, read_px, read_px)
        return resize_rgb(rgb, out_px, out_px)

    def read_tiles(
        self, coords: np.ndarray, size_level0: float, tile_px: int, batch_size: int
    ) -> Iterator[np.ndarray]:
        """Yield the tiles at ``coords`` as (B, tile_px, tile_px, 3) uint8 batches, in order.

        Adjacent tiles of a row are read as one strip, by ``read_options.workers`` threads (see
        :mod:`~wsi_pipeline.sources.tile_reader`). With ``read_options.reader == 'auto'`` and a
        JPEG-tiled TIFF/SVS, the strips come from the stored JPEG tiles decoded directly
        (:mod:`~wsi_pipeline.sources.raw_jpeg`), once their pixels have matched OpenSlide's on the
        first strip this source reads; otherwise, and after a mismatch, through OpenSlide.
        :attr:`read_path` says which.

        Parameters
        ----------
        coords
            (N, 2) level-0 top-left (x, y); tiles may run past the slide's edge (padded white).
        size_level0
            Tile side in level-0 pixels.
        tile_px
            Tile side out.
        batch_size
            Tiles per batch (the last may be smaller).
        """
        coords = np.asarray(coords).reshape(-1, 2)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(coords) == 0:
            return
        level = self.level_for_downsample(size_level0 / tile_px)
        downsample = self.level_downsamples[level]
        read_region, scaled = self._region_reader(coords, size_level0, level)
        on_device = self._read_path.startswith("raw JPEG") and self._decodes_on_device
        if on_device:
            import torch

            device = torch.device(self.read_options.device)

            def allocate(n: int) -> torch.Tensor:
                return torch.empty((n, tile_px, tile_px, 3), dtype=torch.uint8, device=device)

        yield from read_tiles_in_strips(
            read_region,
            coords,
            size_level0,
            level,
            downsample,
            tile_px,
            batch_size,
            resize=resize_rgb_tensor if on_device else resize_rgb,
            workers=self.read_options.workers,
            scaled_decode=scaled,
            allocate=allocate if on_device else pinned_batches(self.read_options.device, tile_px),
            allocate_strip=allocate if on_device else None,
        )

    @property
    def read_path(self) -> str:
        """How tiles are read: ``openslide``, or the raw JPEG path; with the reason for a fallback."""
        return self._read_path

    def _openslide_region(self, level: int, left: int, top: int, width: int, height: int, reduce: int = 1) -> np.ndarray:
        if reduce != 1:
            raise ValueError("OpenSlide reads regions at full scale only")
        return self.read_level_region(left, top, level, width, height)

    def _region_reader(self, coords: np.ndarray, size_level0: float, level: int) -> tuple[RegionReader, bool]:
        """The region reader for this slide, and whether it decodes at reduced scale.

        The raw JPEG path is opened once per source and checked once, on the first strip asked
        for: its pixels must match OpenSlide's there (mean absolute difference at most
        :data:`RAW_PATH_TOLERANCE`), which catches a colour transform a decoder got wrong (Aperio's
        RGB-coded JPEG read as YCbCr, as nvJPEG does) as well as a page mapped to the wrong level.
        A GPU decoder that fails the check falls back to the CPU decoder, which is checked in turn.
        """
        if self._read_path == "":
            self._raw, self._read_path, self._decodes_on_device = self._open_raw_path(coords, size_level0, level)
        if self._raw is None:
            return self._openslide_region, False
        raw = self._raw
        if self._decodes_on_device:
            device = self.read_options.device

            def on_device(level: int, left: int, top: int, width: int, height: int, reduce: int = 1):
                return raw.read_region_torch(level, left, top, width, height, device)

            return on_device, False
        return raw.read_region, self.read_options.scaled_decode

    def _open_raw_path(self, coords: np.ndarray, size_level0: float, level: int) -> tuple[object | None, str, bool]:
        """Open and check the raw JPEG path: (reader or None, read path description, decodes on the device)."""
        if self.read_options.reader == "openslide":
            return None, "openslide", False
        from wsi_pipeline.sources.raw_jpeg import RawJpegPyramid, RawPathUnavailable

        try:
            raw = RawJpegPyramid.open(self.path, self.level_dimensions)
        except RawPathUnavailable as why:
            return None, f"openslide (raw JPEG path unavailable: {why})", False
        strip = plan_strips(coords[:2], size_level0, self.level_downsamples[level])[0]
        region = (level, strip.left, strip.top, strip.width, strip.height)
        reference = self._openslide_region(*region)
        notes = []
        if self.read_options.decoder == "gpu":
            try:
                decoded = raw.read_region_torch(*region, self.read_options.device).cpu().numpy()
                difference = _mean_abs_difference(decoded, reference)
            except Exception as error:  # noqa: BLE001 - no GPU decoder here: the CPU one is checked next
                difference, notes = None, [f"device decoder unavailable: {type(error).__name__}: {error}"]
            if difference is not None and difference <= RAW_PATH_TOLERANCE:
                self._closers.append(raw.close)
                return raw, f"{raw.description}, decoded on {self.read_options.device}", True
            if difference is not None:
                notes = [f"device decoder's pixels differed from OpenSlide's by {difference:.1f} grey levels; CPU decoder used"]
        difference = _mean_abs_difference(raw.read_region(*region), reference)
        if difference > RAW_PATH_TOLERANCE:
            raw.close()
            return None, (
                f"openslide (raw JPEG pixels differed from OpenSlide's on the first tiles: mean |difference| "
                f"{difference:.1f} grey levels)"
            ), False
        self._closers.append(raw.close)
        return raw, "; ".join([raw.description, *notes]), False

    def thumbnail(self, mpp: float) -> tuple[np.ndarray, float]:
        """Return an RGB picture of the whole slide at about ``mpp`` µm/px and its level-0 px per pixel.

        Raises
        ------
        WSIPipelineError
            When the slide's µm/px is unknown (use :meth:`thumbnail_at` with a downsample).
        """
        return self.thumbnail_at(max(1.0, mpp / require_mpp(self)))

    def thumbnail_at(self, downsample: float) -> tuple[np.ndarray, float]:
        """Return an RGB picture of the whole slide shrunk ``downsample`` times (≥ 1) from level 0.

        The picture comes from the coarsest level at least as fine as wanted, resized with an
        area filter. A level too big to read at once (a slide without a coarse level) is read in
        blocks, each shrunk before the next is read: bands about one stored tile high, cut into
        column chunks, so memory stays at one block and each stored (JPEG) tile is decoded about
        once rather than once per band it straddles.
        """
        downsample = max(1.0, float(downsample))
        width, height = self.dimensions
        out_w, out_h = max(1, round(width / downsample)), max(1, round(height / downsample))
        level = self.level_for_downsample(downsample)
        level_w, level_h = self.level_dimensions[level]
        if level_w * level_h <= THUMBNAIL_READ_PIXELS:
            rgb = self.read_region(0, 0, level, level_w, level_h)
            return resize_rgb(rgb, out_w, out_h), width / out_w
        tile_w, tile_h = self.level_tile_size(level)
        # Output rows and columns per block, from level pixels per output pixel; block edges in
        # level pixels come from the exact scale, so rounding never drifts over many blocks.
        rows = max(1, round(max(tile_h, 1) * out_h / level_h))
        band_level_rows = max(1, round(rows * level_h / out_h))
        cols = max(1, int(max(THUMBNAIL_READ_PIXELS // band_level_rows, tile_w) * out_w / level_w))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for row in range(0, out_h, rows):
            end = min(out_h, row + rows)
            top, bottom = _edges(row, end, level_h, out_h)
            for col in range(0, out_w, cols):
                stop = min(out_w, col + cols)
                left, right = _edges(col, stop, level_w, out_w)
                block = self.read_level_region(left, top, level, right - left, bottom - top)
                out[row:end, col:stop] = resize_rgb(block, stop - col, end - row)
        return out, width / out_w

    def read_level_region(self, left: int, top: int, level: int, width: int, height: int) -> np.ndarray:
        """Read an RGB region whose corner (``left``, ``top``) is in pixels of ``level`` itself."""
        scale = self.level_downsamples[level]
        return self.read_region(round(left * scale), round(top * scale), level, width, height)

    def level_tile_size(self, level: int) -> tuple[int, int]:
        """(width, height) of the stored tiles of a level, 256 x 256 when the format does not say."""
        props = self._slide.properties
        try:
            return int(props[f"openslide.level[{level}].tile-width"]), int(props[f"openslide.level[{level}].tile-height"])
        except (KeyError, ValueError):
            return 256, 256

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the OpenSlide handle (and the raw JPEG reader's file)."""
        for close in self._closers:
            close()
        self._closers.clear()
        self._slide.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _mean_abs_difference(pixels: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(pixels.astype(np.int16) - reference).mean())


def pinned_batches(device: str, tile_px: int) -> Callable[[int], np.ndarray] | None:
    """Batch allocator in page-locked memory when batches go to a CUDA device, else None.

    A copy from pinned memory to the GPU runs asynchronously (``non_blocking=True``) at full bus
    speed; from pageable memory it is staged through a bounce buffer and blocks. A new buffer per
    batch: the previous one may still be in flight to the device.
    """
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return lambda n: torch.empty((n, tile_px, tile_px, 3), dtype=torch.uint8, pin_memory=True).numpy()


def _edges(start: int, stop: int, level_size: int, out_size: int) -> tuple[int, int]:
    """Level pixels [first, last) that output pixels [start, stop) cover (at least one)."""
    first = round(start * level_size / out_size)
    return first, max(first + 1, round(stop * level_size / out_size))


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image: area filter when shrinking, bicubic when enlarging.

    Parameters
    ----------
    rgb
        uint8 (H, W, 3).
    width, height
        Output size.

    Returns
    -------
    numpy.ndarray
        uint8 (height, width, 3); the input itself when the size already matches.
    """
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    shrinking = rgb.shape[1] >= width and rgb.shape[0] >= height
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(rgb).resize((width, height), method))


def flatten_on_white(rgba: Image.Image) -> np.ndarray:
    """Composite an RGBA image from OpenSlide on white and return RGB uint8.

    OpenSlide marks areas outside the scanned region as fully transparent; as background they
    must look like glass (white), not black.
    """
    array = np.asarray(rgba)
    rgb = array[..., :3]
    alpha = array[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    # OpenSlide returns premultiplied alpha, so out = rgb + (1 - alpha) * white.
    out = rgb.astype(np.uint16) + (255 - alpha[..., None].astype(np.uint16))
    return np.clip(out, 0, 255).astype(np.uint8)


def resolve_slide_path(path: Path) -> Path:
    """Return the file OpenSlide should open: the path itself, or a DICOM file of a series folder.

    Raises
    ------
    WSIPipelineError
        When nothing is there.
    """
    if path.is_dir():
        dicom = sorted(p for p in path.iterdir() if p.suffix.lower() == ".dcm")
        if dicom:
            return dicom[0]
        raise WSIPipelineError(
            "a folder was given as a slide, but it holds no DICOM (.dcm) files",
            where=str(path),
            fix="point slide_path at the slide file (for DICOM WSI, any .dcm file of the series or its folder)",
        )
    if not path.is_file():
        raise WSIPipelineError("slide file not found", where=str(path), fix="check slide_path in the cohort table")
    return path


def companion_files(path: Path, vendor: str) -> list[Path]:
    """Files besides ``path`` that hold the slide's pixels (folded into its fingerprint).

    A MIRAX ``.mrxs`` is a small index beside a folder of the same stem holding the data; a
    DICOM WSI is a series of ``.dcm`` files in one folder. For single-file formats, none.
    """
    if vendor == "mirax":
        folder = path.with_suffix("")
        return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if vendor == "dicom":
        return sorted(p for p in path.parent.iterdir() if p.suffix.lower() == ".dcm" and p != path)
    return []


def unreadable_slide_error(path: Path, error: Exception) -> WSIPipelineError:
    """The error for a file OpenSlide cannot open, with the most useful fix we can give."""
    fix = "check the file is a complete slide in a format OpenSlide supports; re-export or re-copy it"
    if path.suffix.lower() in {".tif", ".tiff"} and is_untiled_tiff(path):
        fix = (
            "this TIFF stores strips, not tiles, and OpenSlide reads only tiled TIFFs: convert it, e.g. "
            "`vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`"
        )
    return WSIPipelineError(f"OpenSlide cannot read this slide ({type(error).__name__}: {error})", where=str(path), fix=fix)


def is_untiled_tiff(path: Path) -> bool:
    """Return whether ``path`` is a readable TIFF whose first page is stored in strips."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return not tif.pages[0].is_tiled
    except Exception:  # noqa: BLE001 - any failure just means "not that case"
        return False
