"""Content fingerprints of slide files: the same slide gets the same store entry under any path."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Bytes hashed from each end of the file: enough to tell scans apart without reading gigabytes.
SAMPLE_BYTES = 1 << 20


def slide_uid(path: str | Path, properties: dict[str, str] | None = None) -> str:
    """Return a short content fingerprint of a slide file.

    Parameters
    ----------
    path
        The slide file.
    properties
        Scanner properties (e.g. OpenSlide's); the vendor and µm/px ones are folded in so two
        files that differ only in their calibration do not share an entry.

    Returns
    -------
    str
        24 hex characters: a BLAKE2b digest of the file size, its first and last MiB, and the
        selected properties.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            handle.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    for key in sorted(properties or {}):
        if key.startswith(("openslide.vendor", "openslide.mpp", "openslide.objective-power")):
            digest.update(f"{key}={properties[key]}".encode())
    return digest.hexdigest()
