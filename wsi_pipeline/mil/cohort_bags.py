"""A cohort's bags in the feature store: which patients have one, and loading just the ones needed.

A patient's bag is the tile features of all their slides, concatenated (float16 as stored).
These are plain functions of (cohort, store, ids): a notebook calls them without a Dask
client; the engine calls :func:`available_bags` once on the client and :func:`load_bags` in
each training task, for that task's fold only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from wsi_pipeline.cohort.table import Cohort
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.sources.protocol import require_mpp
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.store.feature_store import FeatureStore, features_key, slide_entry
from wsi_pipeline.store.keys import short_hash

#: (patient id, store entries of the patient's slides), the shape a bag source lists patients in.
PatientSlides = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class BagSource(ABC):
    """Where patients' bags come from; small and picklable (paths and keys, never arrays).

    It travels to every training task, which reads its fold's bags itself
    (:func:`load_bags` → :meth:`load`). Subclasses: :class:`StoreBagSource` (the feature
    store), :class:`~wsi_pipeline.mil.external_bags.InstanceTableBags` (a CSV/Parquet instance
    table) and :class:`~wsi_pipeline.mil.external_bags.H5Bags` (CLAM/TRIDENT ``.h5`` files).

    Attributes
    ----------
    patient_slides
        (patient id, the patient's slide entries / bag ids / files) pairs, sorted by patient id.
    """

    patient_slides: PatientSlides

    @property
    def patients(self) -> tuple[str, ...]:
        """The patients that have a bag, in order."""
        return tuple(patient for patient, _ in self.patient_slides)

    @property
    @abstractmethod
    def features_id(self) -> str:
        """What the features are, as ``predictions.csv``'s ``encoder`` column names them."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Plain data that changes when the bags would (part of the train stage's freshness key)."""

    @abstractmethod
    def load_parts(self, patients: Iterable[str]) -> dict[str, list[np.ndarray]]:
        """Patient id -> the (N_i, D) instance features of each of the patient's slides (or bags), in order."""

    @abstractmethod
    def nbytes(self) -> int:
        """What all the source's bags take in memory once loaded, known without loading them."""

    def load_part(self, patient: str, index: int) -> np.ndarray:
        """The patient's ``index``-th slide (or bag) alone; subclasses that can read one slide override this."""
        return self.load_parts([patient])[patient][index]

    def slide_names(self) -> PatientSlides:
        """(patient id, the names of the patient's slides as the user knows them), in ``patient_slides`` order.

        What slide-level predictions call a slide (``slide_id``); by default the entries of
        :attr:`patient_slides` themselves (an instance table's bag ids).
        """
        return self.patient_slides

    def load(self, patients: Iterable[str]) -> dict[str, np.ndarray]:
        """Patient id -> (N, D) instance features of ``patients`` (those the source lists), slides concatenated."""
        loaded = self.load_parts(patients)
        bags = {}
        # Patient by patient, releasing the parts as they are joined, and a single slide taken as
        # it is: concatenating a whole cohort at once held it twice (8.5 GB peak for 4.1 GB of bags).
        for patient in list(loaded):
            parts = loaded.pop(patient)
            bags[patient] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return bags


@dataclass(frozen=True)
class StoreBagSource(BagSource):
    """Bags from the feature entries of the patients' slides in one store.

    Attributes
    ----------
    store_root
        The feature store (a local folder or an fsspec URL).
    encoder_id, tiling_id
        Which features: ``<store>/features/<encoder_id>/<tiling_id>/<slide entry>``.
    tile_filters
        (tiling QC column, ``'>='`` or ``'<='``, threshold) rows a tile must pass to be in the
        bag (``model.min_tissue``, ``max_pen``, ``min_blur``); a column the tiling entry lacks
        filters nothing.
    slide_ids
        The cohort's slide ids of the entries, shaped like ``patient_slides``
        (:func:`entry_slide_ids`); empty: the slides are named by their store entries.
    features_digest
        One hash of the entries' ``features_sha256`` (``available_bags(...).features_digest``):
        part of :meth:`fingerprint`, so features written again with other values (a tiling
        replaced by ``store import-h5 --overwrite``, then extracted again) make the train stage
        and the bag cache stale. One string, not the checksums themselves: the source travels
        with every training task. Empty: the fingerprint names the entries only.
    """

    store_root: str = ""
    encoder_id: str = ""
    tiling_id: str = ""
    tile_filters: tuple[tuple[str, str, float], ...] = ()
    slide_ids: PatientSlides = ()
    features_digest: str = ""

    @property
    def features_id(self) -> str:
        """The encoder id."""
        return self.encoder_id

    def fingerprint(self) -> dict[str, Any]:
        """The slide entries, encoder and tiling ids, tile filters and the digest of their values when known."""
        key: dict[str, Any] = {"bags": self.patient_slides, "encoder_id": self.encoder_id, "tiling_id": self.tiling_id}
        if self.tile_filters:  # absent without filters: the key runs before filters existed stay fresh
            key["tile_filters"] = self.tile_filters
        if self.features_digest:
            key["features_digest"] = self.features_digest
        return key

    def load_parts(self, patients: Iterable[str]) -> dict[str, list[np.ndarray]]:
        """Float16 features of each patient's slides, in the source's slide order (tile filters applied)."""
        wanted = set(patients)
        store = FeatureStore(self.store_root)
        return {
            patient: [self._filtered(store, uid) for uid in uids] for patient, uids in self.patient_slides if patient in wanted
        }

    def load_part(self, patient: str, index: int) -> np.ndarray:
        """One slide's float16 features (tile filters applied), read alone."""
        uids = dict(self.patient_slides)[patient]
        return self._filtered(FeatureStore(self.store_root), uids[index])

    def nbytes(self) -> int:
        """Rows × width × 2 bytes of every slide entry, from the entries' attributes (before tile filters)."""
        store = FeatureStore(self.store_root)
        total = 0
        for _, uids in self.patient_slides:
            for uid in uids:
                attrs = store.attrs(features_key(self.encoder_id, self.tiling_id, uid))
                total += int(attrs.get("n_tiles", 0)) * int(attrs.get("dim", 0)) * np.dtype(attrs.get("dtype", "float16")).itemsize
        return total

    def slide_names(self) -> PatientSlides:
        """The cohort's slide ids (:attr:`slide_ids`), or the store entries when none were given."""
        return self.slide_ids or self.patient_slides

    def _filtered(self, store: FeatureStore, uid: str) -> np.ndarray:
        """A slide's features, less the tiles that fail :attr:`tile_filters`."""
        features = store.read_features(self.encoder_id, self.tiling_id, uid).features
        if not self.tile_filters:
            return features
        return features[tile_mask(store.read_tiling(self.tiling_id, uid).columns, self.tile_filters, len(features))]


def tile_mask(columns: Mapping[str, np.ndarray], filters: Iterable[tuple[str, str, float]], n_tiles: int) -> np.ndarray:
    """Which tiles pass every filter whose column the tiling entry has (a missing column passes all)."""
    keep = np.ones(n_tiles, dtype=bool)
    for column, op, threshold in filters:
        if column not in columns:
            continue
        values = np.asarray(columns[column])
        keep &= values >= threshold if op == ">=" else values <= threshold
    return keep


class AvailableBags(NamedTuple):
    """Which patients of a cohort can be trained on, and why the others cannot.

    Attributes
    ----------
    patient_slides
        (patient id, store entries of the slides with features), sorted by patient id; only
        patients with at least one such slide.
    excluded
        Patient id -> why the patient has no bag (every slide failed or lacks features).
    notes
        One line per patient trained on fewer slides than the cohort lists, or listing one
        image twice (its features enter the bag once).
    warnings
        One line per slide image that several patients list: the same image can then sit in a
        training and a test fold, which patient-level splits exist to prevent.
    checksums
        Store entry -> its ``features_sha256`` (None for an entry written before checksums), for
        every entry of ``patient_slides``: what the features are, not only where.
    """

    patient_slides: PatientSlides
    excluded: dict[str, str]
    notes: list[str]
    warnings: list[str]
    checksums: dict[str, str | None]

    @property
    def features_digest(self) -> str:
        """One hash of :attr:`checksums` (:attr:`StoreBagSource.features_digest`)."""
        return short_hash({"features_sha256": self.checksums}, length=64)


def slide_entries(
    cohort: Cohort,
    source_name: str,
    known: Mapping[str, str] | None = None,
    skip: Collection[str] = (),
) -> dict[str, str]:
    """Slide id -> store entry name for the cohort's slides.

    An entry name is the slide's content fingerprint joined with its level-0 µm/px
    (:func:`~wsi_pipeline.store.feature_store.slide_entry`): computing it opens the slide.

    Parameters
    ----------
    cohort
        The cohort.
    source_name
        The image source the slides are opened with (the workflow's ``modality``).
    known
        Entry names already computed (e.g. by this run's tile tasks), reused without
        opening the slide again.
    skip
        Slide ids left out (e.g. those that failed this run).

    Returns
    -------
    dict
        One entry per slide that is not skipped and opens with a known µm/px; a slide that
        cannot be opened is left out: it has no features, which :func:`available_bags` reports.
    """
    known = known or {}
    skipped = set(skip)
    entries = {}
    for slide in cohort.slide_records():
        if slide.slide_id in skipped:
            continue
        if slide.slide_id in known:
            entries[slide.slide_id] = known[slide.slide_id]
            continue
        try:
            with open_source(source_name, slide.path, slide.mpp_override) as source:
                entries[slide.slide_id] = slide_entry(source.uid, require_mpp(source))
        except WSIPipelineError:
            continue
    return entries


def available_bags(
    store: FeatureStore, cohort: Cohort, uids: Mapping[str, str], encoder_id: str, tiling_id: str
) -> AvailableBags:
    """Decide which patients have features for at least one slide; say why the others have none.

    Parameters
    ----------
    store
        The feature store.
    cohort
        The cohort.
    uids
        Slide id -> store entry name (:func:`slide_entries`); a slide not in it (failed,
        unreadable) counts as having no features.
    encoder_id, tiling_id
        Which features.

    Returns
    -------
    AvailableBags
        ``(patient_slides, excluded, notes)``: patients with at least one complete feature
        entry (trained on those slides only), patients with none (and the slides missing),
        and a note per patient trained without some of their slides.
    """
    patient_slides = []
    excluded: dict[str, str] = {}
    notes: list[str] = []
    listed_by: dict[str, dict[str, list[str]]] = {}  # entry -> patient -> their slide ids with that image
    checksums: dict[str, str | None] = {}
    for patient, group in cohort.slides.groupby("patient_id", sort=True):
        available: list[str] = []
        for slide in group["slide_id"]:
            attrs = store.complete_attrs(features_key(encoder_id, tiling_id, uids[slide])) if slide in uids else None
            if attrs is None:
                continue
            checksums[uids[slide]] = attrs.get("features_sha256")
            listed_by.setdefault(uids[slide], {}).setdefault(patient, []).append(slide)
            if uids[slide] not in available:  # one image listed twice (same content fingerprint) is one slide of the bag
                available.append(uids[slide])
        missing = [s for s in group["slide_id"] if s not in uids or uids[s] not in available]
        if not available:
            excluded[patient] = f"no slide with features (failed or missing: {', '.join(missing)})"
            continue
        if missing:
            notes.append(f"patient {patient}: trained without slide(s) {', '.join(missing)} (failed)")
        patient_slides.append((patient, tuple(available)))
    warnings = []
    for entry, patients in listed_by.items():
        for patient, slides in patients.items():
            if len(slides) > 1:
                notes.append(f"patient {patient}: slides {', '.join(slides)} are one image (store entry {entry}); "
                             "its features enter the bag once")
        if len(patients) > 1:
            listed = "; ".join(f"{patient} ({', '.join(slides)})" for patient, slides in patients.items())
            warnings.append(
                f"one slide image is listed for {len(patients)} patients: {listed} (store entry {entry}). It can sit in a "
                "training and a test fold at once; if they are one patient, give their rows one patient_id"
            )
    return AvailableBags(tuple(patient_slides), excluded, notes, warnings, checksums)


def entry_slide_ids(cohort: Cohort, uids: Mapping[str, str], patient_slides: PatientSlides) -> PatientSlides:
    """The cohort slide ids of the store entries :func:`available_bags` chose, entry for entry.

    A patient's entries are the features of their slides in the cohort's order, less those
    without an entry (failed) or complete features; so the slides they name are, in order,
    the patient's slides whose entry is among them.

    Parameters
    ----------
    cohort
        The cohort.
    uids
        Slide id -> store entry name (:func:`slide_entries`).
    patient_slides
        (patient id, store entries) pairs (``available_bags(...).patient_slides``).

    Returns
    -------
    tuple
        (patient id, the slide ids of the patient's entries), shaped like ``patient_slides``.
    """
    slides = cohort.slides.groupby("patient_id", sort=False)["slide_id"]
    named = []
    for patient, entries in patient_slides:
        chosen = set(entries)
        named_entries: dict[str, str] = {}  # entry -> its first slide id (an image listed twice is one entry)
        for slide in slides.get_group(patient):
            if slide in uids and uids[slide] in chosen:
                named_entries.setdefault(uids[slide], slide)
        names = tuple(named_entries.values())
        if len(names) != len(entries):  # the entries did not come from this cohort and these uids: a bug
            raise ValueError(f"patient {patient}: {len(entries)} store entries but {len(names)} matching slides")
        named.append((patient, names))
    return tuple(named)


def load_bags(source: BagSource, patients: Iterable[str], by_slide: bool = False) -> dict[str, Any]:
    """Read the bags of ``patients`` from their source, and only theirs.

    Parameters
    ----------
    source
        Where the bags are (the store, an instance table, a folder of ``.h5`` files).
    patients
        The patients wanted, e.g. a fold's fit, validation and test patients
        (:attr:`~wsi_pipeline.mil.splits.FoldPlan.patients`).

    Returns
    -------
    dict
        Patient id -> (N, D) features of all the patient's slides (or bags), concatenated in
        the source's order (float16 from the store: training casts per step, so nothing is
        copied to float32 here). Patients the source does not list are absent: the training
        functions then name them in their error (:func:`~wsi_pipeline.mil.bags.check_bags`).
        With ``by_slide``: patient id -> the list of the patient's slide bags instead (late fusion).
    """
    return source.load_parts(patients) if by_slide else source.load(patients)
