"""Bags: one (N, D) feature matrix per patient, checked and turned into tensors.

The engine builds a patient's bag by concatenating the tile features of all their slides
(float16 in the store). Everything that can be wrong with a bag is a data problem the user
can fix, so it is reported with the patient's id rather than surfacing later as a NaN loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from wsi_pipeline.errors import WSIPipelineError


def check_bags(bags: Mapping[str, np.ndarray], ids: Iterable[str]) -> int:
    """Check that every id has a usable bag and that all bags agree on the feature size.

    Parameters
    ----------
    bags
        Patient id -> instance features (N, D).
    ids
        The patients about to be used.

    Returns
    -------
    int
        The common feature dimension D.

    Raises
    ------
    WSIPipelineError
        Naming the patient, if a bag is missing, not 2-D, empty, of another width, or not finite.
    """
    # A standardising view is checked on its raw bags (finite there iff finite after), and a
    # streamed mapping checks each bag as it is read instead of reading every bag up front.
    bags = getattr(bags, "raw", bags)
    check_ids = getattr(bags, "check_ids", None)
    if check_ids is not None:
        return int(check_ids(ids))
    dim: int | None = None
    for pid in ids:
        if pid not in bags:
            raise WSIPipelineError(
                "no feature bag for this patient",
                where=f"patient {pid}",
                fix="run the extract stage for the patient's slides, or drop the patient from the cohort",
            )
        bag = np.asarray(bags[pid])
        if bag.ndim != 2 or bag.shape[0] == 0:
            raise WSIPipelineError(
                f"feature bag has shape {bag.shape}; expected (instances >= 1, features)",
                where=f"patient {pid}",
                fix="check that tiling found tissue on the patient's slides (lower the tissue threshold or drop the slide)",
            )
        if dim is None:
            dim = bag.shape[1]
        elif bag.shape[1] != dim:
            raise WSIPipelineError(
                f"feature bag has {bag.shape[1]} features per tile, other patients have {dim}",
                where=f"patient {pid}",
                fix="extract all slides with the same encoder",
            )
        # float16 features overflow to inf silently; catch it here rather than as a NaN loss.
        if not np.isfinite(bag).all():
            raise WSIPipelineError(
                "feature bag contains NaN or infinite values",
                where=f"patient {pid}",
                fix="re-extract the patient's slides (the stored features are corrupt or overflowed float16)",
            )
    if dim is None:
        raise WSIPipelineError("no patients given", where="bags", fix="pass at least one patient id")
    return dim


def bag_tensor(bag: np.ndarray, device: str | torch.device = "cpu") -> Tensor:
    """Return a bag as a float32 tensor on ``device`` (the store keeps float16)."""
    return torch.as_tensor(np.asarray(bag), dtype=torch.float32, device=device)


def as_float32(rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``rows`` converted to float32, into ``out`` when given (same shape), else a new array.

    Parameters
    ----------
    rows
        A (N, D) array of any float dtype (float16 from the store).
    out
        A float32 array of ``rows``' shape to write into: a reused buffer.

    Returns
    -------
    np.ndarray
        ``out``, or a new float32 array.

    Notes
    -----
    The conversion runs through torch, whose float16 kernels are vectorised (numpy converts
    float16 one value at a time: about 7x slower for a 10,000 x 1,024 bag), and into a reused
    buffer because allocating a fresh 40 MB array costs more in page faults than the
    conversion itself.
    """
    rows = np.ascontiguousarray(rows)
    target = np.empty(rows.shape, dtype=np.float32) if out is None else out
    torch.from_numpy(target).copy_(torch.from_numpy(rows) if rows.flags.writeable else torch.tensor(rows))
    return target


class Scratch:
    """Reusable float32 buffers, one per slot (a bag's position in a training step)."""

    def __init__(self) -> None:
        self._buffers: dict[int, np.ndarray] = {}

    def array(self, shape: tuple[int, ...], slot: int = 0) -> np.ndarray:
        """A float32 array of ``shape`` backed by slot ``slot``'s buffer (grown when too small).

        Its contents are overwritten by the next request for the same slot: use it before then.
        """
        size = int(np.prod(shape))
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[slot] = np.empty(size, dtype=np.float32)
        return buffer[:size].reshape(shape)
