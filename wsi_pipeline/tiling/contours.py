"""Tissue (and pen) contours as polygons in level-0 pixels, and as GeoJSON that QuPath imports.

What QuPath reads
-----------------
QuPath (*File → Import objects from file*, or ``importObjectsFromFile`` in a script) reads a
GeoJSON ``FeatureCollection`` whose coordinates are **level-0 (full-resolution) pixels with the
origin at the top-left corner of the image** (QuPath docs, "Exporting annotations → Units and
origin"). For each ``Feature`` it parses ``geometry`` (``Polygon``, ``MultiPolygon``, ... through
JTS: the first ring is the shell, the others holes; ring orientation is not checked) and, from
``properties`` (``qupath-core/.../io/PathObjectTypeAdapters.java``, ``GsonTools.PathClassTypeAdapter``):

``objectType``
    ``"annotation"``, ``"detection"``, ``"tile"``, ``"cell"``, ``"tmaCore"``; missing means
    annotation. (v0.2 files put the type in the feature's ``id``; ``object_type`` and ``type`` are
    read as aliases.)
``classification``
    ``{"name": str, "color": [r, g, b]}``. The object form needs **both** ``name`` and ``color``
    (a name alone fails to parse); a bare string is also accepted.
``name``
    The object's display name.
``color``
    ``[r, g, b]``: the object's own colour (we leave it to the class colour).
``measurements``
    ``{name: number}`` (v0.4+; a list of ``{"name", "value"}`` before).
``isLocked``, ``metadata``
    Not written here.

Every other key in ``properties`` is ignored on import, so numbers meant for QuPath go under
``measurements`` (``area_um2`` below); other keys are kept for tools that read the file directly.
QuPath's own export rounds coordinates to 2 decimals; so do we (1/100 of a level-0 pixel).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import measure

from wsi_pipeline.atomic import atomic_write_text

#: Class colours shown by QuPath (the same blue as the QC picture's contour; magenta for pen).
TISSUE_COLOR: tuple[int, int, int] = (30, 60, 220)
PEN_COLOR: tuple[int, int, int] = (230, 0, 230)

# A JTS LinearRing needs at least 4 coordinates (3 distinct points + the closing one): QuPath
# refuses the whole file otherwise, so degenerate rings are dropped, never written.
_MIN_RING_POINTS = 4
# Foreground pieces are 4-connected (skimage.measure.find_contours' default, fully_connected="low",
# traces high values face-connected), so the background between them is 8-connected. Labelling
# with the same rules keeps "one piece = one outer contour" true.
_FOREGROUND_CONNECTIVITY = ndimage.generate_binary_structure(2, 1)
_BACKGROUND_CONNECTIVITY = ndimage.generate_binary_structure(2, 2)


def ring_area(ring: np.ndarray) -> float:
    """Return the signed area of a ring by the shoelace formula.

    Parameters
    ----------
    ring
        (K, 2) (x, y) vertices; closed or not (the closing edge is implied).

    Returns
    -------
    float
        Positive when the ring turns counter-clockwise with the y axis pointing up (the
        mathematical convention RFC 7946 uses), negative otherwise. In image coordinates
        (y pointing down) a positive ring *looks* clockwise on screen.
    """
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_area(polygon: list[np.ndarray]) -> float:
    """Return the net area of ``[outer, *holes]`` (outer area minus the holes'), unsigned."""
    if not polygon:
        return 0.0
    return abs(ring_area(polygon[0])) - sum(abs(ring_area(hole)) for hole in polygon[1:])


def mask_polygons(
    mask: np.ndarray, scale: float, *, simplify_px: float = 1.0, min_area_px: int = 4
) -> list[list[np.ndarray]]:
    """Trace the pieces of a binary mask into polygons with holes, in level-0 pixels.

    Each 4-connected piece of the mask gives one polygon: its outer boundary and one ring per
    hole. A piece lying inside another piece's hole (an island in a lake) is a polygon of its
    own, as GeoJSON requires.

    Parameters
    ----------
    mask
        (h, w) bool mask (tissue or pen) at ``scale``.
    scale
        Level-0 pixels per mask pixel.
    simplify_px
        Douglas-Peucker tolerance in mask pixels (``skimage.measure.approximate_polygon``).
        0 keeps the exact pixel outline (only collinear vertices go); 1 px removes the
        staircase of the pixel grid (about 10 times fewer vertices), moving the boundary by
        at most one mask pixel, which is the mask's own precision anyway.
    min_area_px
        Pieces with fewer mask pixels than this are dropped, and holes with fewer pixels are
        filled (both are noise at thumbnail scale).

    Returns
    -------
    list of list of numpy.ndarray
        One ``[outer, *holes]`` per piece, largest net area first. Each ring is (K, 2) float64
        level-0 (x, y), closed (first point == last point), K >= 4. Orientation follows the
        RFC 7946 right-hand rule computed on the numbers as given (y up): the outer ring has a
        positive signed area (:func:`ring_area`), holes a negative one. Drawn in image
        coordinates (y down), outer rings therefore appear clockwise and holes
        counter-clockwise. QuPath ignores orientation.

    Notes
    -----
    The boundary is traced with marching squares at level 0.5, then the pixel corners it cuts
    are put back, so rings follow the pixels' edges: mask pixel ``(r, c)`` covers level-0
    ``[c, c + 1) × [r, r + 1)`` times ``scale``, and with ``simplify_px=0`` a ring's area is
    exactly its pixel count times ``scale²``. The mask is padded by one pixel before tracing so
    that pieces touching the mask border still give closed rings (running along the border).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    labels, n_pieces = ndimage.label(mask, structure=_FOREGROUND_CONNECTIVITY)
    if n_pieces == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n_pieces + 1)
    polygons: list[list[np.ndarray]] = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or sizes[index] < max(min_area_px, 1):
            continue
        # Trace one piece at a time in its own padded crop: other pieces (islands in its holes,
        # neighbours touching diagonally) then cannot add rings to it, and the cost stays
        # proportional to the piece's bounding box.
        piece = np.pad(labels[box] == index, 1)
        _fill_small_holes(piece, min_area_px)
        offset = np.array([box[1].start - 1, box[0].start - 1], dtype=np.float64)
        rings = []
        for contour in measure.find_contours(piece.astype(np.float32), 0.5):
            ring = _to_level0(_pixel_outline(contour, piece), offset, scale, simplify_px)
            if ring is not None:
                rings.append(ring)
        if not rings:
            continue
        # The outer boundary encloses everything else, so it has the largest area.
        areas = [abs(ring_area(r)) for r in rings]
        outer_at = int(np.argmax(areas))
        outer = _oriented(rings[outer_at], positive=True)
        holes = [_oriented(r, positive=False) for i, r in enumerate(rings) if i != outer_at]
        polygons.append([outer, *holes])
    polygons.sort(key=polygon_area, reverse=True)
    return polygons


def contours_geojson(
    tissue: np.ndarray,
    scale: float,
    *,
    pen: np.ndarray | None = None,
    properties: Mapping[str, Any] | None = None,
    mpp: float | None = None,
    simplify_px: float = 1.0,
    min_area_px: int = 4,
) -> dict[str, Any]:
    """Return the tissue (and pen) pieces as a GeoJSON ``FeatureCollection`` QuPath can import.

    Parameters
    ----------
    tissue
        (h, w) bool tissue mask.
    scale
        Level-0 pixels per mask pixel (for ``tissue`` and ``pen``).
    pen
        Optional (h', w') bool pen-ink mask at the same ``scale``; its pieces become features
        classified ``"Pen"``.
    properties
        Extra keys copied into every feature's ``properties`` (e.g. ``{"slide_id": "s01"}``).
        QuPath ignores keys it does not know (see the module docstring); the keys written here
        (``objectType``, ``classification``, ``name``, ``measurements``) win over them.
    mpp
        Level-0 µm per pixel. When given, each feature carries its net area as the measurement
        ``area_um2`` (shown in QuPath's measurement table).
    simplify_px, min_area_px
        Passed to :func:`mask_polygons`.

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``; one ``Feature`` per piece with a
        ``Polygon`` geometry (coordinates in level-0 pixels, rounded to 0.01) and properties
        ``{"objectType": "annotation", "classification": {"name": "Tissue" | "Pen",
        "color": [r, g, b]}, "name": "Tissue 1", ...}``, tissue first, largest first. An empty
        mask gives no features.
    """
    layers: list[tuple[str, np.ndarray, tuple[int, int, int]]] = [("Tissue", tissue, TISSUE_COLOR)]
    if pen is not None:
        layers.append(("Pen", pen, PEN_COLOR))
    features = []
    for class_name, mask, color in layers:
        polygons = mask_polygons(mask, scale, simplify_px=simplify_px, min_area_px=min_area_px)
        for number, polygon in enumerate(polygons, start=1):
            props: dict[str, Any] = dict(properties or {})
            props.update(
                {
                    "objectType": "annotation",
                    "classification": {"name": class_name, "color": list(color)},
                    "name": f"{class_name} {number}",
                }
            )
            if mpp is not None:
                props["measurements"] = {"area_um2": round(polygon_area(polygon) * mpp * mpp, 2)}
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [np.round(ring, 2).tolist() for ring in polygon],
                    },
                    "properties": props,
                }
            )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write a GeoJSON mapping to ``path`` atomically (UTF-8) and return the path.

    ``NaN`` and infinities are refused (``allow_nan=False``): they are not valid JSON, and a
    reader other than QuPath's lenient one would reject the whole file.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return atomic_write_text(path, text + "\n")


def _fill_small_holes(piece: np.ndarray, min_area_px: int) -> None:
    """Fill, in place, the holes of a padded single-piece crop smaller than ``min_area_px``."""
    if min_area_px <= 1:
        return
    background, n = ndimage.label(~piece, structure=_BACKGROUND_CONNECTIVITY)
    if n <= 1:
        return
    sizes = np.bincount(background.ravel(), minlength=n + 1)
    small = sizes < min_area_px
    small[0] = False
    small[background[0, 0]] = False  # the padding makes the outside one component: never a hole
    piece |= small[background]


def _pixel_outline(contour: np.ndarray, piece: np.ndarray) -> np.ndarray:
    """Put back the pixel corners that marching squares cuts, so the ring follows pixel edges.

    ``find_contours`` at 0.5 on a 0/1 image puts one vertex at the middle of every pixel edge
    of the boundary and joins two perpendicular edges by a diagonal, cutting each corner by
    half a pixel. Simplifying such a ring then keeps one of the two cut vertices at random and
    shifts whole straight edges inward by half a pixel (a 40 × 60 px rectangle lost 2 % of its
    area). With the corner points restored, straight edges stay where the pixels end and the
    ring's area is the pixel count. A corner shared by two diagonal pixels only (a saddle) is
    left cut: restoring it would make the ring touch itself, which JTS (QuPath) calls invalid.

    Parameters
    ----------
    contour
        (K, 2) closed (row, col) contour of ``piece`` from ``find_contours(piece, 0.5)``.
    piece
        The padded bool crop it was traced on.

    Returns
    -------
    numpy.ndarray
        (K', 2) closed (row, col) ring with the corners inserted.
    """
    step = np.diff(contour, axis=0)
    diagonal = np.flatnonzero((np.abs(step[:, 0]) == 0.5) & (np.abs(step[:, 1]) == 0.5))
    if len(diagonal) == 0:
        return contour
    a, b = contour[diagonal], contour[diagonal + 1]
    # A vertex on a horizontal pixel edge has a half-integer row and an integer column (and
    # vice versa): the corner takes its row from one and its column from the other.
    a_row_half = (a[:, 0] % 1) == 0.5
    a_col_half = (a[:, 1] % 1) == 0.5
    corners = np.stack([np.where(a_row_half, a[:, 0], b[:, 0]), np.where(a_col_half, a[:, 1], b[:, 1])], axis=1)
    r0 = np.floor(corners[:, 0]).astype(np.intp)
    c0 = np.floor(corners[:, 1]).astype(np.intp)
    top_left, bottom_right = piece[r0, c0], piece[r0 + 1, c0 + 1]
    top_right, bottom_left = piece[r0, c0 + 1], piece[r0 + 1, c0]
    saddle = (top_left == bottom_right) & (top_right == bottom_left) & (top_left != top_right)
    keep = ~saddle
    return np.insert(contour, diagonal[keep] + 1, corners[keep], axis=0)


def _to_level0(contour: np.ndarray, offset: np.ndarray, scale: float, simplify_px: float) -> np.ndarray | None:
    """Turn a (row, col) contour of a padded crop into a closed level-0 (x, y) ring, or None."""
    ring = contour[:, ::-1].astype(np.float64)
    if np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    # Douglas-Peucker never drops a ring's first point, and tracing starts mid-edge: start at
    # the left-most (then top-most) vertex instead, a true corner of the convex hull, so that
    # an arbitrary start point neither survives as a stray vertex nor costs a real corner.
    start = int(np.lexsort((ring[:, 1], ring[:, 0]))[0])
    ring = np.roll(ring, -start, axis=0)
    ring = np.vstack([ring, ring[:1]])
    # A tiny tolerance still removes the collinear mid-edge vertices (half of all of them).
    ring = measure.approximate_polygon(ring, tolerance=max(simplify_px, 1e-6))
    if not np.array_equal(ring[0], ring[-1]):  # approximate_polygon keeps it closed; be sure
        ring = np.vstack([ring, ring[:1]])
    if len(ring) < _MIN_RING_POINTS or abs(ring_area(ring)) == 0:
        return None
    # Crop index + offset = mask index; +0.5 because index i is the centre of a pixel that
    # spans [i, i + 1) in mask units.
    return (ring + offset + 0.5) * scale


def _oriented(ring: np.ndarray, *, positive: bool) -> np.ndarray:
    """Return ``ring`` reversed if needed so that its signed area has the requested sign."""
    return ring if (ring_area(ring) > 0) == positive else ring[::-1].copy()
