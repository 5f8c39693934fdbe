"""Per-pixel work on a large thumbnail, a band of rows at a time.

A 150,000 x 100,000 px slide has a 4,700 x 3,100 px thumbnail at 8 µm/px: 15 Mpx, which float
images of a few channels turn into gigabytes. Colour and optical-density tests are local, so
they run on bands of rows (with a halo as wide as any smoothing reaches, so every band sees
the same neighbours the whole image would) and only their boolean results are kept whole.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Pixels per band: keeps the float temporaries of a band to tens of MB.
BAND_PIXELS = 1 << 20


def row_bands(height: int, width: int, halo: int = 0, pixels: int = BAND_PIXELS) -> Iterator[tuple[slice, slice, slice]]:
    """Yield ``(read, keep, out)`` slices covering ``height`` rows in bands.

    Parameters
    ----------
    height, width
        Image size.
    halo
        Rows of context needed on each side of a band (a Gaussian of sigma s reaches ``4 s``).
    pixels
        About how many pixels a band holds, halo excluded.

    Yields
    ------
    read : slice
        The rows to compute on (band plus halo, clipped to the image).
    keep : slice
        The band's rows within the computed block.
    out : slice
        The band's rows in the full image.
    """
    rows = max(1, pixels // max(1, width))
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        low, high = max(0, start - halo), min(height, stop + halo)
        yield slice(low, high), slice(start - low, stop - low), slice(start, stop)


def gaussian_halo(sigma: float) -> int:
    """Rows a ``scipy.ndimage.gaussian_filter`` of ``sigma`` reads on each side (its default truncation)."""
    return int(4.0 * sigma + 0.5) + 1 if sigma > 0 else 0
