"""Stable short hashes of parameter sets, used in store keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def short_hash(params: dict[str, Any], length: int = 10) -> str:
    """Return a short, order-independent hash of JSON-serialisable parameters.

    Parameters
    ----------
    params
        The parameters (keys sorted before hashing, so dict order does not matter).
    length
        Hex characters kept.

    Returns
    -------
    str
        The hash prefix.
    """
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
