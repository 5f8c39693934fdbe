"""How numbers are written in plots and reports, so both always agree."""

from __future__ import annotations

import math
from collections.abc import Mapping


def _defined(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def format_value(x: float | None, digits: int = 3) -> str:
    """Write a metric value with ``digits`` decimals, or ``n/a`` when undefined.

    Parameters
    ----------
    x
        The value; ``None`` or ``nan`` means undefined.
    digits
        Decimals.

    Returns
    -------
    str
        E.g. ``"0.812"`` or ``"n/a"``.
    """
    return f"{x:.{digits}f}" if _defined(x) else "n/a"


def format_interval(entry: Mapping[str, float | None], digits: int = 3) -> str:
    """Write ``{"value", "ci_low", "ci_high"}`` as ``value [low, high]``.

    Parameters
    ----------
    entry
        A metric entry as stored in metrics.json.
    digits
        Decimals.

    Returns
    -------
    str
        E.g. ``"0.812 [0.701, 0.905]"``; the bracket is omitted when the interval is
        undefined, and the whole is ``"n/a"`` when the value is.
    """
    value = entry.get("value")
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if not _defined(value):
        return "n/a"
    if not (_defined(low) and _defined(high)):
        return format_value(value, digits)
    return f"{format_value(value, digits)} [{format_value(low, digits)}, {format_value(high, digits)}]"


def format_p(p: float | None) -> str:
    """Write a p-value: 3 decimals, or 2 significant digits below 0.001.

    Parameters
    ----------
    p
        The p-value; ``None`` or ``nan`` means undefined.

    Returns
    -------
    str
        E.g. ``"0.042"``, ``"3.1e-05"`` or ``"n/a"``.
    """
    if not _defined(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.2g}"
