"""How Aperio scanners code tiles and describe pages, for synthetic slides laid out like theirs.

An Aperio SVS page (checked on CMU-1-Small-Region.svs) is tiled JPEG with TIFF photometric RGB:

- the JPEG data is **RGB-coded** (no YCbCr transform, all components sampled 1x1);
- the tiles are **abbreviated** streams (``SOI, SOF, SOS, data, EOI``): the quantisation and
  Huffman tables of the page sit once in the TIFF JPEGTables tag (347);
- the tiles carry **no JFIF and no Adobe marker**, and the components are numbered 0, 1, 2. So a
  plain libjpeg cannot tell the data is RGB (it would be for IDs 'R', 'G', 'B', which is what
  libjpeg itself writes) and decodes it as YCbCr unless told otherwise; libtiff tells it, a raw
  decoder must insert an Adobe marker. The synthetic slides reproduce that trap on purpose;
- page 0's ImageDescription starts with ``Aperio``, which is how OpenSlide recognises the vendor;
  its ``|``-separated ``key = value`` fields give ``aperio.MPP`` (``openslide.mpp-x``) and
  ``aperio.AppMag`` (``openslide.objective-power``). Page 1 is a stripped thumbnail.
"""

from __future__ import annotations

import imagecodecs
import numpy as np

from wsi_pipeline.sources.raw_jpeg import (
    APP14,
    DHT,
    DQT,
    EOI,
    SOI,
    SOS,
    jpeg_header_segments,
)

#: First line of every description (a fixed version, so files are byte-reproducible).
APERIO_LIBRARY = "Aperio Image Library v12.0.0"
#: Start-of-frame markers this module rewrites (baseline and extended sequential).
_FRAMES = (0xC0, 0xC1)


def encode_rgb_coded_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """JPEG-encode ``pixels`` without a colour transform (RGB components, 1x1 sampling).

    Standard Huffman tables (no optimisation), so every tile of a given quality carries the
    same tables and they can be shared by a page.
    """
    return bytes(
        imagecodecs.jpeg8_encode(
            pixels, level=quality, colorspace="RGB", outcolorspace="RGB", optimize=False
        )
    )


def _renumber_components(segment: bytearray, marker: int) -> None:
    """Number the components of a SOF or SOS segment 0, 1, 2... in place, as Aperio does."""
    if marker == SOS:
        first, step, count = 5, 2, segment[4]
    else:
        first, step, count = 10, 3, segment[9]
    for k in range(count):
        segment[first + k * step] = k


def split_aperio_tile(stream: bytes) -> tuple[bytes, bytes]:
    """Split an RGB-coded JPEG (`encode_rgb_coded_jpeg`) into shared tables and an Aperio-style tile.

    Parameters
    ----------
    stream
        A complete baseline JPEG as libjpeg writes it for RGB: Adobe APP14, DQT, SOF, DHT..., SOS.

    Returns
    -------
    tables : bytes
        ``SOI, DQT..., DHT..., EOI``: the JPEGTables tag value.
    tile : bytes
        ``SOI, SOF, SOS, data, EOI`` with the Adobe marker dropped and components numbered 0, 1, 2.

    Raises
    ------
    ValueError
        If the stream holds a segment this layout has no place for (JFIF, restart interval...).
    """
    segments = jpeg_header_segments(stream)
    tables, header = [], []
    for marker, start, end in segments:
        if marker in (DQT, DHT):
            tables.append(stream[start:end])
        elif marker in (*_FRAMES, SOS):
            segment = bytearray(stream[start:end])
            _renumber_components(segment, marker)
            header.append(bytes(segment))
        elif marker != APP14:
            raise ValueError(f"unexpected JPEG segment 0x{marker:02X} in an RGB-coded tile")
    data = stream[segments[-1].end :]
    return SOI + b"".join(tables) + EOI, SOI + b"".join(header) + data


def level0_description(width: int, height: int, tile: int, quality: int, mpp: float) -> str:
    """Page 0's ImageDescription: vendor line, geometry, and the fields OpenSlide reads.

    The objective power is the conventional one for the pixel size (10 / mpp: 0.25 µm/px is 40x).
    """
    return (
        f"{APERIO_LIBRARY} \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}"
        f"|AppMag = {round(10 / mpp)}|MPP = {mpp:.10g}"
    )


def reduced_description(width: int, height: int, tile: int, quality: int, size: tuple[int, int]) -> str:
    """ImageDescription of a reduced level of ``size`` (width, height)."""
    return (
        f"{APERIO_LIBRARY} \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"-> {size[0]}x{size[1]} JPEG/RGB Q={quality}"
    )


def thumbnail_description(width: int, height: int, size: tuple[int, int]) -> str:
    """ImageDescription of the thumbnail page of ``size`` (width, height)."""
    return f"{APERIO_LIBRARY} \r\n{width}x{height} -> {size[0]}x{size[1]} - "
