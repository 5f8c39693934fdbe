"""Instance features standardised with statistics of a fold's fit patients only.

The mean and standard deviation of each feature are taken over every instance of the fit
patients' bags, then applied to the fit, validation and test bags alike, so nothing about the
validation or test patients reaches training. Bags are standardised when read (a view over the
fold's bags), not copied: a fold of large float16 bags is not doubled in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from wsi_pipeline.mil.bag_cache import prefetched
from wsi_pipeline.mil.bags import Scratch, as_float32

#: A feature whose standard deviation over the fit instances is below this is only centred.
MIN_STD = 1e-6


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature mean and standard deviation (float32, shape (D,))."""

    mean: np.ndarray
    std: np.ndarray


def fit_stats(bags: Mapping[str, np.ndarray], ids: Iterable[str]) -> FeatureStats:
    """Mean and standard deviation per feature over all instances of ``ids``' bags.

    Bag by bag (no concatenation): each bag's rows are shifted by the first bag's mean, summed
    in float32 (torch's pairwise sums, into reused buffers) and accumulated across bags in
    float64. The shift keeps ``E[x^2] - E[x]^2`` accurate for a feature whose mean is large
    against its spread; float32 sums of a bag are 3-4x faster than converting it to float64,
    which each fold of each aggregator does once. A constant feature gets std 1.
    """
    count, total, squares, shift = 0, None, None, None
    scratch = Scratch()
    ids = list(ids)
    for (bag,) in prefetched(bags, [[pid] for pid in ids]):
        bag = np.asarray(bag)
        x = torch.from_numpy(as_float32(bag, scratch.array(bag.shape)))
        if shift is None:
            shift = x.mean(dim=0)
        x.sub_(shift)
        squared = torch.mul(x, x, out=torch.from_numpy(scratch.array(bag.shape, slot=1)))
        bag_total, bag_squares = x.sum(dim=0).double().numpy(), squared.sum(dim=0).double().numpy()
        total = bag_total if total is None else total + bag_total
        squares = bag_squares if squares is None else squares + bag_squares
        count += bag.shape[0]
    if total is None or squares is None or shift is None or count == 0:
        raise ValueError("no fit bags to take feature statistics from")
    shifted_mean = total / count
    std = np.sqrt(np.maximum(squares / count - shifted_mean**2, 0.0))
    std[std < MIN_STD] = 1.0
    return FeatureStats((shifted_mean + shift.double().numpy()).astype(np.float32), std.astype(np.float32))


class StandardisedBags(Mapping[str, np.ndarray]):
    """``bags`` with every bag read as ``(bag - mean) / std`` (float32), computed on access.

    Training reads :attr:`raw` bags and calls :meth:`apply` on the rows it keeps, so a
    subsampled step standardises its rows only, and a streamed source is prefetched as itself.
    """

    def __init__(self, bags: Mapping[str, np.ndarray], stats: FeatureStats) -> None:
        self.raw = bags
        self.stats = stats

    def apply(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(rows - mean) / std`` as float32, written into ``out`` when given (a reused buffer).

        Converted with :func:`~wsi_pipeline.mil.bags.as_float32`, then standardised in place:
        the cached bag itself is never written to.
        """
        x = torch.from_numpy(as_float32(rows, out))
        x.sub_(self._tensors[0]).mul_(self._tensors[1])
        return x.numpy()

    @property
    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1 / std) as float32 tensors, made once."""
        made = getattr(self, "_made", None)
        if made is None:
            made = self._made = (torch.from_numpy(self.stats.mean.astype(np.float32)),
                                 torch.from_numpy((1.0 / self.stats.std).astype(np.float32)))
        return made

    def __getitem__(self, pid: str) -> np.ndarray:
        return self.apply(self.raw[pid])

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, pid: object) -> bool:
        return pid in self.raw


#: Statistics already taken in this process: (bag data key, fit keys in order) -> stats. Every
#: aggregator of a fold, and every grid point of nested CV's inner folds, standardises with the
#: same fit patients; the statistics are two (D,) vectors, where taking them reads every fit bag
#: (seconds on a large cohort, and a second read of the store when bags are streamed).
_STATS_MEMO: OrderedDict[tuple[str, tuple[str, ...]], FeatureStats] = OrderedDict()
_STATS_MEMO_SIZE = 512
_STATS_LOCK = threading.Lock()


def standardised(bags: Mapping[str, np.ndarray], fit_ids: Iterable[str], *, data_key: str | None = None) -> StandardisedBags:
    """The fold's bags standardised with the statistics of ``fit_ids``' instances only.

    Parameters
    ----------
    bags
        Key -> bag.
    fit_ids
        The fit keys whose instances the statistics are taken over.
    data_key
        What identifies ``bags``' data (``data_key`` of the bag cache's mappings): with it, the
        statistics of the same fit keys, in the same order, are taken once per process and
        reused, identical to the bit. None: always taken.
    """
    fit_ids = tuple(fit_ids)
    if data_key is None:
        return StandardisedBags(bags, fit_stats(bags, fit_ids))
    key = (data_key, fit_ids)
    with _STATS_LOCK:
        stats = _STATS_MEMO.get(key)
    if stats is None:
        stats = fit_stats(bags, fit_ids)
        with _STATS_LOCK:
            _STATS_MEMO[key] = stats
            while len(_STATS_MEMO) > _STATS_MEMO_SIZE:
                _STATS_MEMO.popitem(last=False)
    return StandardisedBags(bags, stats)


def clear_stats_memo() -> None:
    """Forget the statistics :func:`standardised` has kept."""
    with _STATS_LOCK:
        _STATS_MEMO.clear()
