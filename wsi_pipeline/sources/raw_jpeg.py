"""Read the compressed JPEG tiles of a tiled TIFF/SVS pyramid directly and decode them in bulk.

OpenSlide's ``read_region`` decodes every tile into premultiplied ARGB and composites it with
cairo; on a 2-core machine that is about 77 tiles/s. Reading the stored JPEG bytes with
``os.pread`` (offsets and byte counts from tifffile) and decoding them with libjpeg-turbo, in C
code that releases the GIL, gives the same pixels several times faster and scales with threads.
libjpeg-turbo can also decode in the DCT domain at 1/2, 1/4 or 1/8 scale, which is how a 20x tile
is read from a 40x-only pyramid (Aperio: levels 1x, 4x, 16x) without decoding the full 40x pixels.

How a stored tile becomes a decodable JPEG stream:

- **shared tables**: TIFF stores the quantisation and Huffman tables of a page once, in the
  JPEGTables tag (347): ``SOI, DQT/DHT..., EOI``; each tile is an *abbreviated* stream
  ``SOI, SOF, SOS, data, EOI``. A complete stream is ``tables[:-2] + tile[2:]``.
- **colour**: with TIFF photometric YCbCr (6) the JPEG data is YCbCr, which is what libjpeg
  assumes for 3 components. With photometric RGB (2), as Aperio writes, the JPEG data is RGB
  without a colour transform and the tiles carry neither a JFIF nor an Adobe marker; Aperio numbers
  the components 0, 1, 2, so libjpeg cannot tell them from YCbCr either and would apply the YCbCr
  to RGB transform, giving wrong colours (libtiff, hence OpenSlide, sets the colour space
  explicitly). An Adobe APP14 segment with transform 0 right after SOI makes any libjpeg decode
  them as RGB. nvJPEG (torchvision on CUDA) ignores that marker: check GPU pixels per slide.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Self

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

if TYPE_CHECKING:
    import torch

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
APP0, APP14, DQT, DHT, DRI, SOS, COM = 0xE0, 0xEE, 0xDB, 0xC4, 0xDD, 0xDA, 0xFE
#: Start-of-frame markers libjpeg-turbo decodes with DCT scaling: baseline and extended sequential.
SEQUENTIAL_SOF = frozenset({0xC0, 0xC1})
#: Other start-of-frame markers, named for the error message.
OTHER_SOF = {
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "hierarchical",
    0xC6: "hierarchical progressive",
    0xC7: "hierarchical lossless",
    0xC9: "arithmetic-coded",
    0xCA: "arithmetic-coded progressive",
    0xCB: "arithmetic-coded lossless",
    0xCD: "arithmetic-coded hierarchical",
    0xCE: "arithmetic-coded hierarchical progressive",
    0xCF: "arithmetic-coded hierarchical lossless",
}
#: Markers that stand alone (no length field).
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

COMPRESSION_JPEG = 7
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6
#: DCT-domain scale factors libjpeg-turbo offers through Pillow's draft mode.
REDUCTIONS = (1, 2, 4, 8)
#: Tiles at most this many bytes apart in the file are fetched with one read (a row of tiles is
#: usually contiguous; one large read beats many small system calls).
READ_GAP_BYTES = 16 * 1024
#: Upper bound of one coalesced read.
MAX_READ_BYTES = 32 * 1024 * 1024
#: Colour of pixels outside the level or in missing tiles (OpenSlide returns them transparent and
#: the pipeline flattens transparency on white).
BACKGROUND = 255

_JPEG8 = bool(getattr(imagecodecs, "JPEG8", None) and imagecodecs.JPEG8.available)


class RawPathUnavailable(Exception):
    """The file's layout does not allow the raw path; str(error) says why (shown to users)."""


class JpegSegment(NamedTuple):
    """A marker segment of a JPEG stream: ``data[start:end]`` includes the marker."""

    marker: int
    start: int
    end: int


def jpeg_header_segments(data: bytes | memoryview) -> list[JpegSegment]:
    """List the marker segments of a JPEG stream from SOI up to SOS (or EOI for a tables stream).

    Parameters
    ----------
    data
        A JPEG stream or a TIFF JPEGTables value, starting with SOI.

    Returns
    -------
    list of JpegSegment
        In stream order, SOI excluded; the last one is SOS or EOI.

    Raises
    ------
    ValueError
        If the data does not start with SOI or ends inside a segment.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    if data[:2] != SOI:
        raise ValueError("not a JPEG stream (no SOI marker)")
    segments: list[JpegSegment] = []
    i, size = 2, len(data)
    while True:
        while i + 1 < size and data[i] == 0xFF and data[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 2 > size or data[i] != 0xFF:
            raise ValueError(f"JPEG stream is malformed or truncated at byte {i}")
        marker = data[i + 1]
        if marker == 0xD9:
            segments.append(JpegSegment(marker, i, i + 2))
            return segments
        if marker in STANDALONE:
            i += 2
            continue
        if i + 4 > size:
            raise ValueError(f"JPEG stream is truncated at byte {i}")
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if end > size:
            raise ValueError(f"JPEG segment 0x{marker:02X} at byte {i} runs past the end")
        segments.append(JpegSegment(marker, i, end))
        if marker == SOS:
            return segments
        i = end


def adobe_app14(transform: int) -> bytes:
    """An Adobe APP14 segment: marker FFEE, length 14, ``Adobe``, version 100, flags 0, transform.

    Parameters
    ----------
    transform
        0: the components are stored as they are (RGB); 1: YCbCr; 2: YCCK.

    Returns
    -------
    bytes
        16 bytes, to insert right after SOI.
    """
    if transform not in (0, 1, 2):
        raise ValueError(f"Adobe transform must be 0, 1 or 2, got {transform!r}")
    return b"\xff\xee" + struct.pack(">H5sHHHB", 14, b"Adobe", 100, 0, 0, transform)


# ---------------------------------------------------------------------------------------------
# Opening: page per level, and whether its tiles suit the raw path


@dataclass(frozen=True)
class _Level:
    """Where the tiles of one pyramid level are and how to make them decodable."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    columns: int
    rows: int
    offsets: np.ndarray  # int64, one per stored tile, row-major
    counts: np.ndarray  # int64; 0 = tile not stored
    prefix: bytes  # SOI [+ APP14] [+ tables without SOI/EOI]; a stream is prefix + tile[2:]
    coding: str  # for the description


def _page_problem(page: tifffile.TiffPage) -> str | None:
    """Why the tiles of ``page`` cannot take the raw path, or ``None`` (cheap tag checks)."""
    if page.compression != COMPRESSION_JPEG:
        name = getattr(page.compression, "name", str(page.compression))
        return f"tiles are compressed with {name} ({int(page.compression)}), not JPEG (7)"
    if page.planarconfig != 1:
        return "colour planes are stored separately (planar configuration 2)"
    if page.samplesperpixel != 3:
        return f"{page.samplesperpixel} samples per pixel, not 3 (RGB)"
    if page.bitspersample != 8:
        return f"{page.bitspersample} bits per sample, not 8"
    if page.photometric not in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR):
        name = getattr(page.photometric, "name", str(page.photometric))
        return f"photometric interpretation {name}, not RGB or YCbCr"
    if page.imagedepth != 1 or page.tiledepth != 1:
        return "volumetric (3-D) tiles"
    if page.tilewidth % 8 or page.tilelength % 8:
        return f"tile size {page.tilewidth}x{page.tilelength} is not a multiple of 8"
    return None


def _jpeg_problem(tables: bytes | None, tile: bytes, page: tifffile.TiffPage) -> str | None:
    """Why the JPEG coding (read from the tables and one tile) cannot take the raw path, or ``None``."""
    try:
        table_segments = jpeg_header_segments(tables) if tables else []
        tile_segments = jpeg_header_segments(tile)
    except ValueError as error:
        return f"a stored JPEG tile or the JPEGTables tag is malformed ({error})"
    if tables and (table_segments[-1].marker != 0xD9 or tables[-2:] != EOI):
        return "the JPEGTables tag does not end with an EOI marker"
    frames = [s for s in tile_segments if 0xC0 <= s.marker <= 0xCF and s.marker not in (DHT, 0xC8, 0xCC)]
    if not frames:
        return "a stored JPEG tile has no start-of-frame marker"
    frame = tile[frames[0].start : frames[0].end]
    if frames[0].marker not in SEQUENTIAL_SOF:
        return f"tiles are {OTHER_SOF.get(frames[0].marker, 'unusual')} JPEG (SOF 0x{frames[0].marker:02X})"
    precision, height, width, components = struct.unpack(">BHHB", frame[4:10])
    if precision != 8:
        return f"tiles are {precision}-bit JPEG"
    if components != 3:
        return f"tiles are {components}-component JPEG"
    if (width, height) != (page.tilewidth, page.tilelength):
        return f"JPEG tiles are {width}x{height} but the TIFF tiles are {page.tilewidth}x{page.tilelength}"
    if page.photometric == PHOTOMETRIC_RGB:
        segments = [(tables, s) for s in table_segments] + [(tile, s) for s in tile_segments]
        for source, s in segments:
            body = source[s.start + 4 : s.end]
            if s.marker == APP0 and body.startswith(b"JFIF\0"):
                # libjpeg treats JFIF as YCbCr before looking at any Adobe marker.
                return "RGB-coded tiles carry a JFIF marker, which makes libjpeg decode them as YCbCr"
            if s.marker == APP14 and body.startswith(b"Adobe") and len(body) >= 12 and body[11] != 0:
                return f"RGB-coded tiles carry an Adobe marker with colour transform {body[11]}"
    return None


def _read_exact(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``; short reads (a truncated file) raise ``OSError``."""
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise OSError(f"file is truncated: wanted {size} bytes at offset {offset}, got {len(data)}")
    return data


def _level_from_page(page: tifffile.TiffPage, fd: int, colour_fix: bool) -> _Level:
    """Check ``page`` and collect what reading its tiles needs; `RawPathUnavailable` if it cannot."""
    problem = _page_problem(page)
    if problem is None:
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        columns = -(-page.imagewidth // page.tilewidth)
        rows = -(-page.imagelength // page.tilelength)
        if offsets.size != columns * rows or counts.size != offsets.size:
            problem = f"{offsets.size} tile offsets for a grid of {columns}x{rows} tiles"
    if problem is None:
        tables = page.jpegtables or None
        stored = np.flatnonzero(counts)
        if stored.size:
            first = _read_exact(fd, int(offsets[stored[0]]), int(counts[stored[0]]))
            problem = _jpeg_problem(tables, first, page)
    if problem is not None:
        raise RawPathUnavailable(f"TIFF page {page.index} ({page.imagewidth}x{page.imagelength}): {problem}")
    rgb = page.photometric == PHOTOMETRIC_RGB
    insert = rgb and colour_fix
    prefix = SOI + (adobe_app14(0) if insert else b"") + (tables[2:-2] if tables else b"")
    if rgb:
        coding = "RGB-coded, Adobe transform 0 inserted" if insert else "RGB-coded, colour fix off"
    else:
        coding = "YCbCr-coded"
    return _Level(
        width=int(page.imagewidth),
        height=int(page.imagelength),
        tile_width=int(page.tilewidth),
        tile_height=int(page.tilelength),
        columns=columns,
        rows=rows,
        offsets=offsets,
        counts=counts,
        prefix=prefix,
        coding=coding,
    )


def _page_for_level(pages: Sequence[tifffile.TiffPage], index: int, size: tuple[int, int]) -> tifffile.TiffPage:
    """The first tiled page of ``size`` (width, height); `RawPathUnavailable` when there is none."""
    width, height = size
    same_size = [p for p in pages if (p.imagewidth, p.imagelength) == (width, height)]
    for page in same_size:
        if page.is_tiled:
            return page
    if same_size:
        raise RawPathUnavailable(f"level {index} ({width}x{height}) is stored in strips, not tiles")
    raise RawPathUnavailable(f"level {index} ({width}x{height}) has no TIFF page of that size")


# ---------------------------------------------------------------------------------------------
# Reading


def _axis_overlap(
    origin: int, tile: int, size: int, start: int, length: int, reduce: int
) -> tuple[slice, slice] | None:
    """Source (in the decoded tile) and destination (in the output) slices along one axis.

    The tile covers level pixels ``[origin, origin + tile)`` of which those below ``size`` are
    image (the rest is padding); the region is ``[start, start + length)``. Everything is in
    level pixels and, apart from ``size``, a multiple of ``reduce``; a reduced pixel that is only
    partly inside the image is kept (it mixes image and the encoder's padding).
    """
    low = max(origin, start)
    high = min(origin + tile, size, start + length)
    if high <= low:
        return None
    n = -(-(high - low) // reduce)
    source = (low - origin) // reduce
    target = (low - start) // reduce
    return slice(source, source + n), slice(target, target + n)


def _decode(stream: bytes, reduce: int, expected: tuple[int, int]) -> np.ndarray:
    """Decode one complete JPEG stream to uint8 (H, W, 3), at 1/``reduce`` scale in the DCT domain.

    imagecodecs (libjpeg-turbo) is the faster full-scale decoder (about 1.35x Pillow on one thread
    and 1.7x on two, on 240-px tiles); Pillow's draft mode is the way to libjpeg-turbo's DCT
    scaling. Both release the GIL while decoding.
    """
    if reduce == 1 and _JPEG8:
        pixels = imagecodecs.jpeg8_decode(stream)
    else:
        with Image.open(BytesIO(stream), formats=["JPEG"]) as image:
            if reduce > 1:
                image.draft("RGB", (expected[1], expected[0]))
            if image.mode != "RGB":
                image = image.convert("RGB")
            pixels = np.asarray(image)
    if pixels.shape != (*expected, 3):
        raise RuntimeError(
            f"a JPEG tile decoded at 1/{reduce} scale to {pixels.shape}, expected {(*expected, 3)}"
        )
    return pixels


def _check_region(left: int, top: int, width: int, height: int, reduce: int) -> None:
    """ValueError unless the region is non-empty and ``reduce`` is usable and divides it."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"region size must be positive, got {width}x{height}")
    if left % reduce or top % reduce or width % reduce or height % reduce:
        raise ValueError(
            f"reduce={reduce} must divide left, top, width and height, got ({left}, {top}, {width}, {height})"
        )


class RawJpegPyramid:
    """The JPEG tiles of the pages of a tiled TIFF/SVS that hold an OpenSlide pyramid's levels.

    Build it with :meth:`open`. Reads use ``os.pread`` on one file descriptor (no shared file
    position) and decoders that release the GIL, so any number of threads may call
    :meth:`read_region` and :meth:`jpeg_streams` at once on one object. Do not call
    :meth:`close` while reads are running.

    Attributes
    ----------
    description
        One line for provenance, e.g. ``"raw JPEG tiles, libjpeg-turbo (RGB-coded, Adobe
        transform 0 inserted)"``.
    """

    def __init__(self, path: Path, fd: int, levels: list[_Level]) -> None:
        self.path = path
        self._fd = fd
        self._levels = levels
        codings = list(dict.fromkeys(level.coding for level in levels))
        self.description = f"raw JPEG tiles, libjpeg-turbo ({'; '.join(codings)})"

    @classmethod
    def open(
        cls,
        path: str | Path,
        level_dimensions: Sequence[tuple[int, int]],
        *,
        colour_fix: bool = True,
    ) -> RawJpegPyramid:
        """Map each pyramid level to the tiled TIFF page of its size and check the raw path suits it.

        Aperio files hold a stripped thumbnail between level 0 and the reduced levels and label
        and macro images after them; only tiled pages are levels.

        Parameters
        ----------
        path
            The slide file.
        level_dimensions
            ``(width, height)`` of every level, level 0 first (OpenSlide's ``level_dimensions``).
        colour_fix
            Insert an Adobe APP14 marker (transform 0) into RGB-coded tiles so libjpeg does not
            treat them as YCbCr. ``False`` decodes them with the wrong colours (for tests of the
            check that catches this).

        Returns
        -------
        RawJpegPyramid

        Raises
        ------
        RawPathUnavailable
            When the file is not a TIFF that tifffile parses, a level has no tiled page of its
            size, or a page is not 8-bit 3-sample contiguous JPEG (photometric RGB or YCbCr,
            baseline or extended sequential). The message says which and why.
        OSError
            When reading the file fails after it was parsed.
        """
        path = Path(path)
        if path.is_dir():
            raise RawPathUnavailable(f"{path.name} is a folder (e.g. a DICOM series), not a TIFF file")
        if not level_dimensions:
            raise ValueError("level_dimensions is empty")
        try:
            tif = tifffile.TiffFile(path)
        except OSError as error:
            raise RawPathUnavailable(f"cannot read {path.name} ({error})") from error
        except Exception as error:  # tifffile raises many kinds; any of them means "not for us"
            raise RawPathUnavailable(f"{path.name} is not a TIFF file tifffile can parse ({error})") from error
        fd = -1
        try:
            pages = list(tif.pages)
            fd = os.open(path, os.O_RDONLY)
            levels = [
                _level_from_page(_page_for_level(pages, index, (int(w), int(h))), fd, colour_fix)
                for index, (w, h) in enumerate(level_dimensions)
            ]
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        finally:
            tif.close()
        return cls(path, fd, levels)

    # -- levels ----------------------------------------------------------------------------------

    @property
    def level_count(self) -> int:
        """Number of levels."""
        return len(self._levels)

    def _level(self, level: int) -> _Level:
        if self._fd < 0:
            raise ValueError("RawJpegPyramid is closed")
        if not 0 <= level < len(self._levels):
            raise IndexError(f"level {level} out of range 0-{len(self._levels) - 1}")
        return self._levels[level]

    def tile_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of the stored tiles of ``level``."""
        lv = self._level(level)
        return lv.tile_width, lv.tile_height

    # -- bytes -----------------------------------------------------------------------------------

    def _stored_tiles(self, lv: _Level, indices: Sequence[int]) -> list[memoryview | None]:
        """The stored bytes of tiles ``indices`` (row-major), ``None`` where a tile is missing.

        Tiles close together in the file are fetched with one ``os.pread``.
        """
        result: list[memoryview | None] = [None] * len(indices)
        present = [k for k, i in enumerate(indices) if lv.counts[i] > 0]
        present.sort(key=lambda k: lv.offsets[indices[k]])
        group: list[int] = []
        start = end = 0

        def flush() -> None:
            data = memoryview(_read_exact(self._fd, start, end - start))
            for k in group:
                offset = int(lv.offsets[indices[k]]) - start
                result[k] = data[offset : offset + int(lv.counts[indices[k]])]

        for k in present:
            offset, count = int(lv.offsets[indices[k]]), int(lv.counts[indices[k]])
            if group and offset - end <= READ_GAP_BYTES and offset + count - start <= MAX_READ_BYTES:
                group.append(k)
                end = max(end, offset + count)
                continue
            if group:
                flush()
            group, start, end = [k], offset, offset + count
        if group:
            flush()
        return result

    def _stream(self, lv: _Level, tile: memoryview) -> bytes:
        """The complete JPEG stream of one stored tile."""
        if tile[:2] != SOI:
            raise ValueError("a stored tile is not a JPEG stream (no SOI marker); the file is damaged")
        if lv.prefix == SOI:
            return bytes(tile)
        return b"".join((lv.prefix, tile[2:]))

    def _tile_indices(self, lv: _Level, tiles: Sequence[tuple[int, int]]) -> list[int]:
        indices = []
        for col, row in tiles:
            if not (0 <= col < lv.columns and 0 <= row < lv.rows):
                raise IndexError(f"tile ({col}, {row}) outside the {lv.columns}x{lv.rows} grid")
            indices.append(row * lv.columns + col)
        return indices

    def jpeg_streams(self, level: int, tile_indices: Sequence[tuple[int, int]]) -> list[bytes]:
        """Complete, decodable JPEG streams of stored tiles, for decoders outside this class (GPU).

        Parameters
        ----------
        level
            Pyramid level.
        tile_indices
            ``(column, row)`` of each tile in the level's tile grid.

        Returns
        -------
        list of bytes
            One stream per tile (tables merged, Adobe marker inserted for RGB-coded tiles);
            ``b""`` for a tile the file does not store (read it as white).
        """
        lv = self._level(level)
        stored = self._stored_tiles(lv, self._tile_indices(lv, tile_indices))
        return [b"" if tile is None else self._stream(lv, tile) for tile in stored]

    # -- pixels ----------------------------------------------------------------------------------

    def _overlapping(self, lv: _Level, left: int, top: int, width: int, height: int) -> list[tuple[int, int]]:
        """``(column, row)`` of the stored tiles that overlap the region inside the level."""
        x0, x1 = max(left, 0), min(left + width, lv.width)
        y0, y1 = max(top, 0), min(top + height, lv.height)
        if x1 <= x0 or y1 <= y0:
            return []
        columns = range(x0 // lv.tile_width, (x1 - 1) // lv.tile_width + 1)
        rows = range(y0 // lv.tile_height, (y1 - 1) // lv.tile_height + 1)
        return [(col, row) for row in rows for col in columns]

    def read_region(self, level: int, left: int, top: int, width: int, height: int, reduce: int = 1) -> np.ndarray:
        """Pixels of a region of one level, optionally at 1/2, 1/4 or 1/8 scale (DCT-domain decode).

        Parameters
        ----------
        level
            Pyramid level.
        left, top, width, height
            The region in pixels of that level; may extend past the level.
        reduce
            1, 2, 4 or 8; must divide ``left``, ``top``, ``width`` and ``height``.

        Returns
        -------
        numpy.ndarray
            uint8 (height // reduce, width // reduce, 3). Pixels outside the level and in tiles the
            file does not store are white (255). Each stored tile is read and decoded once.

        Raises
        ------
        ValueError
            If ``reduce`` is not usable or does not divide the region, or the file is damaged.
        IndexError
            If ``level`` does not exist.
        """
        _check_region(left, top, width, height, reduce)
        lv = self._level(level)
        out = np.full((height // reduce, width // reduce, 3), BACKGROUND, dtype=np.uint8)
        tiles = self._overlapping(lv, left, top, width, height)
        stored = self._stored_tiles(lv, self._tile_indices(lv, tiles))
        expected = (lv.tile_height // reduce, lv.tile_width // reduce)
        for (col, row), tile in zip(tiles, stored):
            if tile is None:
                continue
            pixels = _decode(self._stream(lv, tile), reduce, expected)
            ys = _axis_overlap(row * lv.tile_height, lv.tile_height, lv.height, top, height, reduce)
            xs = _axis_overlap(col * lv.tile_width, lv.tile_width, lv.width, left, width, reduce)
            if ys is None or xs is None:
                continue
            out[ys[1], xs[1]] = pixels[ys[0], xs[0]]
        return out

    def read_region_torch(
        self, level: int, left: int, top: int, width: int, height: int, device: str | torch.device
    ) -> torch.Tensor:
        """Like :meth:`read_region` at full scale, decoded and assembled on ``device``.

        Decoding goes through :func:`decode_streams_torch` (nvImageCodec or nvJPEG on CUDA, which
        may ignore the Adobe marker of RGB-coded tiles: compare with :meth:`read_region` per
        slide format before trusting it).

        Returns
        -------
        torch.Tensor
            uint8 (height, width, 3) on ``device``; white outside the level and in missing tiles.
        """
        import torch

        _check_region(left, top, width, height, 1)
        lv = self._level(level)
        out = torch.full((height, width, 3), BACKGROUND, dtype=torch.uint8, device=device)
        tiles = self._overlapping(lv, left, top, width, height)
        streams = self.jpeg_streams(level, tiles)
        present = [k for k, stream in enumerate(streams) if stream]
        decoded = decode_streams_torch([streams[k] for k in present], device)
        for k, pixels in zip(present, decoded):
            col, row = tiles[k]
            if tuple(pixels.shape) != (lv.tile_height, lv.tile_width, 3):
                raise RuntimeError(f"tile ({col}, {row}) decoded to {tuple(pixels.shape)} on {device}")
            ys = _axis_overlap(row * lv.tile_height, lv.tile_height, lv.height, top, height, 1)
            xs = _axis_overlap(col * lv.tile_width, lv.tile_width, lv.width, left, width, 1)
            if ys is not None and xs is not None:
                out[ys[1], xs[1]] = pixels[ys[0], xs[0]]
        return out

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; later reads raise ``ValueError``. Closing twice is harmless."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{lv.width}x{lv.height}" for lv in self._levels)
        return f"RawJpegPyramid({str(self.path)!r}, levels=[{sizes}])"


# ---------------------------------------------------------------------------------------------
# GPU (or torchvision CPU) decoding

_NVIMGCODEC = threading.local()  # one nvImageCodec decoder per thread and device


def _nvimgcodec_decode(streams: Sequence[bytes], device: torch.device) -> list[torch.Tensor] | None:
    """Decode with NVIDIA nvImageCodec (hardware JPEG engines where present); ``None`` if absent."""
    try:
        from nvidia import nvimgcodec
    except ImportError:
        return None
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    if not hasattr(_NVIMGCODEC, "decoders"):
        _NVIMGCODEC.decoders = {}
    if index not in _NVIMGCODEC.decoders:
        _NVIMGCODEC.decoders[index] = nvimgcodec.Decoder(device_id=index)
    images = _NVIMGCODEC.decoders[index].decode(list(streams))
    if any(image is None for image in images):
        raise RuntimeError("nvImageCodec could not decode a JPEG tile")
    # nvImageCodec images expose __cuda_array_interface__ as (H, W, 3) uint8.
    return [torch.as_tensor(image, device=device) for image in images]


def decode_streams_torch(streams: Sequence[bytes], device: str | torch.device) -> list[torch.Tensor]:
    """Decode complete JPEG streams to uint8 (H, W, 3) tensors on ``device``.

    On CUDA, NVIDIA nvImageCodec when it is installed, else nvJPEG through
    ``torchvision.io.decode_jpeg`` (one batched call); on CPU, torchvision's libjpeg-turbo.
    nvJPEG ignores the Adobe APP14 marker, so RGB-coded (Aperio) tiles come out with wrong colours
    there: compare with :meth:`RawJpegPyramid.read_region` per slide format.

    Parameters
    ----------
    streams
        Complete JPEG streams (:meth:`RawJpegPyramid.jpeg_streams`).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Returns
    -------
    list of torch.Tensor
        One (H, W, 3) uint8 tensor per stream (possibly a non-contiguous view of (3, H, W)).
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    if not streams:
        return []
    if device.type == "cuda":
        decoded = _nvimgcodec_decode(streams, device)
        if decoded is not None:
            return decoded
    # decode_jpeg wants CPU uint8 tensors; bytearray gives frombuffer a writable buffer.
    data = [torch.frombuffer(bytearray(stream), dtype=torch.uint8) for stream in streams]
    images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return [image.permute(1, 2, 0) for image in images]
