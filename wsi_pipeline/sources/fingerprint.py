"""Content fingerprints of slide files: the same slide gets the same store entry under any path."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Bytes hashed from each end of the file: enough to tell scans apart without reading gigabytes.
SAMPLE_BYTES = 1 << 20
#: Bytes hashed from the head of each companion file (MIRAX data files, other DICOM instances).
COMPANION_BYTES = 1 << 16
#: Properties folded in: format, calibration, and OpenSlide's own hash of the slide's pixels.
PROPERTY_PREFIXES = ("openslide.vendor", "openslide.mpp", "openslide.objective-power", "openslide.quickhash-1")


def slide_uid(
    path: str | Path, properties: Mapping[str, str] | None = None, companions: Iterable[str | Path] = ()
) -> str:
    """Return a short content fingerprint of a slide.

    Parameters
    ----------
    path
        The slide's main file.
    properties
        Format properties (e.g. OpenSlide's); the vendor, µm/px, objective and quickhash ones are
        folded in, so two files that differ only in their calibration do not share an entry.
    companions
        Other files holding the slide's pixels (a MIRAX data folder, a DICOM series): their names,
        sizes and first 64 KiB are folded in, so a slide whose data files changed gets a new uid.

    Returns
    -------
    str
        24 hex characters: a BLAKE2b digest of the file size, its first and last MiB, the
        companions and the selected properties.
    """
    path = Path(path)
    digest = hashlib.blake2b(digest_size=12)
    _hash_file(digest, path, SAMPLE_BYTES, tail=True)
    for companion in sorted(Path(c) for c in companions):
        digest.update(companion.name.encode())
        _hash_file(digest, companion, COMPANION_BYTES, tail=False)
    for key in sorted(properties or {}):
        if key.startswith(PROPERTY_PREFIXES):
            digest.update(f"{key}={(properties or {})[key]}".encode())
    return digest.hexdigest()


def _hash_file(digest: hashlib._Hash, path: Path, sample: int, *, tail: bool) -> None:
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(sample))
        if tail and size > sample:
            handle.seek(max(sample, size - sample))
            digest.update(handle.read(sample))
