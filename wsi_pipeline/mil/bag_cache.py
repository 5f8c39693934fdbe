"""Bags for training tasks: held in the worker's memory for the whole run when they fit, streamed when not.

A run trains one task per (repeat, fold, aggregator), and every task needs nearly the whole
cohort's bags (its fit, validation and test patients). Reading them from the store for each
task would read the cohort ``repeats × folds × aggregators`` times; instead each worker
process keeps the bags it has read in a process-wide cache, so the cohort is read from Zarr
once per worker per run (:func:`run_bags`, mode ``memory``).

When the source's bags do not fit the memory budget (``model.bag_memory_gb``, by default
half the worker's memory limit), nothing is cached: a task gets a :class:`StreamedBags`
mapping that reads a bag from its source (chunk by chunk, as Zarr stores it) when asked, and
reads the *next* training step's bags on a background thread while the current step computes
(:func:`prefetched`), so an epoch's time stays dominated by compute and a worker's memory by
one step's bags.

The cache holds one bag source at a time (keyed by its fingerprint and the bag layout): a
worker that outlives the run (an existing scheduler) drops the previous run's bags when the
next run's first task arrives, and never holds two cohorts at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from wsi_pipeline.mil.bags import check_bags
from wsi_pipeline.mil.cohort_bags import BagSource, load_bags
from wsi_pipeline.store.keys import short_hash

#: Share of the worker's memory limit (or of the machine's available memory outside a
#: worker) that cached bags may take when ``model.bag_memory_gb`` is unset: the rest is the
#: model, its activations, and the other threads' tasks.
DEFAULT_MEMORY_SHARE = 0.5

#: Reader threads of a streamed source: reads release the GIL (Zarr decompression, file I/O),
#: and one step's bags are a handful, so two threads keep ahead of compute.
PREFETCH_THREADS = 2

BagMode = Literal["memory", "streamed"]


def memory_budget(requested_gb: float | None) -> int:
    """The bytes cached bags may take in this process.

    Parameters
    ----------
    requested_gb
        ``model.bag_memory_gb``; ``None``: :data:`DEFAULT_MEMORY_SHARE` of the Dask worker's
        memory limit when this runs in a worker that has one, else of the memory the machine
        has available now.
    """
    if requested_gb is not None:
        return int(requested_gb * 2**30)
    limit = _worker_memory_limit()
    if limit is None:
        import psutil  # a dependency of distributed

        limit = int(psutil.virtual_memory().available)
    return int(limit * DEFAULT_MEMORY_SHARE)


def _worker_memory_limit() -> int | None:
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        return None  # not in a worker (a notebook, a test, the synchronous path)
    return int(limit) if limit else None


@dataclass(frozen=True)
class BagPlan:
    """How a run's bags are served: what they weigh against the budget, and the mode chosen.

    Attributes
    ----------
    mode
        ``'memory'`` (cached for the run) or ``'streamed'`` (read per step, prefetched).
    nbytes
        The source's bags in memory, as stored (float16 from the feature store).
    budget
        The bytes cached bags may take (:func:`memory_budget`).
    """

    mode: BagMode
    nbytes: int
    budget: int

    def describe(self) -> str:
        """One line for logs and the training record."""
        verb = "held in memory" if self.mode == "memory" else "streamed from their source (they exceed the budget)"
        return f"bags {verb}: {self.nbytes / 2**30:.2f} GiB against a budget of {self.budget / 2**30:.2f} GiB"


def plan_bags(source: BagSource, budget: int) -> BagPlan:
    """Memory when the whole source's bags fit ``budget``, else streamed.

    A source's size is asked of it once per process (it opens every store entry, or reads a
    table's id column): a run's tasks, one per fold and aggregator, all ask about the same source.
    """
    key = bag_data_key(source, by_slide=False)
    nbytes = _SIZES.get(key)
    if nbytes is None:
        nbytes = _SIZES[key] = source.nbytes()
    return BagPlan("memory" if nbytes <= budget else "streamed", nbytes, budget)


class _ProcessCache:
    """The bags this process has read for the current run, one source at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: str | None = None
        self.bags: dict[str, Any] = {}

    def get(self, source: BagSource, patients: Iterable[str], by_slide: bool) -> dict[str, Any]:
        key = bag_data_key(source, by_slide)
        wanted = list(patients)
        # One lock for reading too: two threads of a worker starting tasks at once would
        # otherwise both read the cohort, holding it twice for a while.
        with self.lock:
            if key != self.key:
                self.key, self.bags = key, {}
            missing = [p for p in wanted if p not in self.bags]
            if missing:
                loaded = load_bags(source, missing, by_slide=by_slide)
                for patient, bag in loaded.items():  # checked once, when read; never cached unchecked
                    for part in bag if by_slide else [bag]:
                        check_bags({patient: part}, [patient])
                self.bags.update(loaded)
            return CheckedBags({p: self.bags[p] for p in wanted if p in self.bags}, data_key=key)

    def clear(self) -> None:
        with self.lock:
            self.key, self.bags = None, {}


_CACHE = _ProcessCache()
#: Source key -> its bags' size, for :func:`plan_bags`.
_SIZES: dict[str, int] = {}


class CheckedBags(dict):
    """Bags already checked when they were read: :meth:`check_ids` looks at shapes, not values.

    Scanning every value of every bag for NaN again in each task (each fold of each
    aggregator) would cost seconds per task on a cohort that was checked once, when cached.

    ``data_key`` names the bag data (:func:`bag_data_key`): two mappings with the same key hold
    the same bag for the same id, so what is computed from them (a fold's standardisation
    statistics) can be reused.
    """

    def __init__(self, bags: Mapping[str, Any], *, data_key: str | None = None) -> None:
        super().__init__(bags)
        self.data_key = data_key

    def check_ids(self, ids: Iterable[str]) -> int:
        """The feature width common to ``ids``' bags; missing patients and width mismatches raise as check_bags does."""
        ids = list(ids)
        missing = [key for key in ids if key not in self]
        if missing or not ids:
            check_bags({}, missing)  # names the first missing patient (or that none was given)
        widths = {key: self._width(self[key]) for key in ids}
        first = ids[0]
        for key, width in widths.items():
            if width != widths[first]:
                check_bags({first: np.empty((1, widths[first])), key: np.empty((1, width))}, [first, key])
        return widths[first]

    @staticmethod
    def _width(bag: Any) -> int:
        return int(np.shape(bag)[1]) if isinstance(bag, np.ndarray) else int(np.shape(bag[0])[1])


def bag_data_key(source: BagSource, by_slide: bool) -> str:
    """What identifies the bags read from ``source``: its fingerprint, its type and the bag shape asked for."""
    return short_hash({"source": source.fingerprint(), "type": type(source).__name__, "by_slide": by_slide}, length=64)


def clear_cache() -> None:
    """Drop this process's cached bags, sizes and standardisation statistics (tests; a notebook that wants its memory back)."""
    # Imported here: standardise imports this module.
    from wsi_pipeline.mil.standardise import clear_stats_memo

    _CACHE.clear()
    _SIZES.clear()
    clear_stats_memo()


def cached_patients() -> int:
    """How many patients' bags this process holds now."""
    return len(_CACHE.bags)


def run_bags(
    source: BagSource, patients: Iterable[str], *, by_slide: bool = False, budget: int | None = None
) -> tuple[Mapping[str, Any], BagPlan]:
    """The bags of ``patients`` for a training task, from this process's cache or streamed.

    Parameters
    ----------
    source
        Where the bags are.
    patients
        The task's patients (fit, validation and test).
    by_slide
        Patient id -> list of the patient's slide bags (late fusion, slide-level bags)
        instead of one concatenated bag.
    budget
        Bytes the cache may hold (default :func:`memory_budget` of ``None``).

    Returns
    -------
    bags
        A dict (memory mode: arrays shared with the cache, never copied per task; do not
        modify them) or a :class:`StreamedBags`.
    plan
        The mode chosen and why.
    """
    plan = plan_bags(source, memory_budget(None) if budget is None else budget)
    if plan.mode == "memory":
        return _CACHE.get(source, patients, by_slide), plan
    return StreamedBags(source, patients, by_slide=by_slide), plan


class StreamedBags(Mapping[str, Any]):
    """Bags read from their source when asked for, with reads of the next ones ahead on threads.

    Behaves as a read-only ``{key: bag}`` mapping: patient id -> the patient's bag (the list
    of their slide bags with ``by_slide``), or, from :meth:`slide_view`, slide key -> one
    slide's bag. :meth:`prefetch` starts reading bags that will be asked for next; a
    prefetched bag is dropped once handed out, so the mapping holds at most what has been
    prefetched and not yet used.
    """

    def __init__(self, source: BagSource, patients: Iterable[str], *, by_slide: bool = False) -> None:
        listed = set(source.patients)
        keys = [p for p in patients if p in listed]
        self._setup(source, keys, lambda patient: load_bags(source, [patient], by_slide=by_slide)[patient])
        self._patients = keys
        self._by_slide = by_slide
        self.data_key = bag_data_key(source, by_slide)  # as CheckedBags.data_key

    def _setup(self, source: BagSource, keys: list[str], read: Callable[[str], Any]) -> None:
        self._source = source
        self._keys = keys
        self._known = set(keys)
        self._read = lambda key: self._checked(key, read(key))
        self._dim: int | None = None
        self._by_slide = False
        self._pending: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def slide_view(self) -> StreamedBags:
        """Slide key (``patient<SEP>i``, :mod:`~wsi_pipeline.mil.fusion`) -> that slide's bag, read alone."""
        from wsi_pipeline.mil.fusion import SLIDE_SEP, patient_of

        counts = {patient: len(slides) for patient, slides in self._source.patient_slides}
        keys = [f"{patient}{SLIDE_SEP}{i}" for patient in self._patients for i in range(counts[patient])]
        source = self._source

        def read(key: str) -> np.ndarray:
            return source.load_part(patient_of(key), int(key.rsplit(SLIDE_SEP, 1)[1]))

        view = StreamedBags.__new__(StreamedBags)
        view._setup(source, keys, read)
        view._patients = self._patients
        view.data_key = self.data_key
        return view

    def _checked(self, key: str, bag: Any) -> Any:
        """A bag as read, checked as :func:`~wsi_pipeline.mil.bags.check_bags` checks bags in memory."""
        parts = list(bag) if self._by_slide else [bag]
        for part in parts:
            dim = check_bags({key: part}, [key])
            if self._dim is not None and dim != self._dim:
                check_bags({"first": np.empty((1, self._dim)), key: part}, ["first", key])  # names the mismatch
            self._dim = dim
        return bag

    def check_ids(self, ids: Iterable[str]) -> int:
        """What :func:`~wsi_pipeline.mil.bags.check_bags` checks, without reading every bag now.

        Every id must be listed (a missing one is named as check_bags names it); the first
        bag is read to learn the feature width; the others are checked as they are read.
        """
        ids = list(ids)
        missing = [key for key in ids if key not in self._known]
        if missing or not ids:
            check_bags({}, missing)  # raises, naming the first missing patient (or that none was given)
        if self._dim is None:
            self[ids[0]]
        assert self._dim is not None
        return self._dim

    def prefetch(self, keys: Iterable[str]) -> None:
        """Start reading the bags of ``keys`` in the background (those not already on their way)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="bag-prefetch")
            for key in keys:
                if key in self._known and key not in self._pending:
                    self._pending[key] = self._pool.submit(self._read, key)

    def __getitem__(self, key: str) -> Any:
        if key not in self._known:
            raise KeyError(key)
        with self._lock:
            pending = self._pending.pop(key, None)
        return pending.result() if pending is not None else self._read(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._known

    def close(self) -> None:
        """Stop the reader threads (pending reads are dropped)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._pending.clear()

    def __del__(self) -> None:  # a task that forgot close() does not leak its threads
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def prefetched(bags: Mapping[str, np.ndarray], groups: Sequence[Sequence[str]]) -> Iterator[list[np.ndarray]]:
    """Yield the bags of each group in turn; where ``bags`` can prefetch, the next group is read meanwhile.

    Parameters
    ----------
    bags
        Any ``{id: bag}`` mapping; one with a ``prefetch(ids)`` method (:class:`StreamedBags`,
        or a view over one) gets the next group's ids while the caller works on the current one.
    groups
        Ids per step, in the order they will be used.
    """
    prefetch = getattr(bags, "prefetch", None)
    if prefetch is not None and groups:
        prefetch(groups[0])
    for i, group in enumerate(groups):
        if prefetch is not None and i + 1 < len(groups):
            prefetch(groups[i + 1])
        yield [bags[key] for key in group]
