"""A patient's slides as bags of their own: late fusion (``patient-late``) and slide-level evaluation (``slide``).

With ``model.bags: patient-late`` or ``slide`` each slide (or bag of an instance table, or
``.h5`` file) is a training bag carrying its patient's target; folds stay patient-level (a
patient's slides are all in the same split). At test time each slide is predicted. Late
fusion gives the patient's row the mean of their slides' prediction columns (a multiclass
``predicted`` is the class of the highest mean probability); ``slide`` keeps one row per
slide, named by :func:`slide_ids`, and scoring resamples the slides' patients.
``patient-early`` (the default) concatenates a patient's slides into one bag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

#: Separates the patient id from the slide's index in a slide bag's key.
SLIDE_SEP = "\x1f"


def slide_bags(bags: Mapping[str, np.ndarray | Sequence[np.ndarray]]) -> Mapping[str, np.ndarray]:
    """``patient<SEP>i`` -> the patient's i-th slide bag; a patient given one array has one slide.

    Bags streamed from their source (:class:`~wsi_pipeline.mil.bag_cache.StreamedBags`) give
    their own slide view, which reads a slide when asked rather than every slide now.
    """
    view = getattr(bags, "slide_view", None)
    if view is not None:
        return view()
    out: dict[str, np.ndarray] = {}
    for pid, parts in bags.items():
        for i, part in enumerate([parts] if isinstance(parts, np.ndarray) else list(parts)):
            out[f"{pid}{SLIDE_SEP}{i}"] = part
    return out


def patient_of(key: str) -> str:
    """The patient a slide bag's key belongs to."""
    return key.split(SLIDE_SEP, 1)[0]


def slide_index(key: str) -> int:
    """The slide's position among its patient's slide bags (the ``i`` of ``patient<SEP>i``)."""
    return int(key.rsplit(SLIDE_SEP, 1)[1])


def slide_ids(keys: Iterable[str], names: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The slide ids of slide bag keys, as the user knows the slides.

    Parameters
    ----------
    keys
        Slide bag keys (:func:`slide_bags`).
    names
        Patient id -> the names of the patient's slides, in the order of their bags
        (:meth:`~wsi_pipeline.mil.cohort_bags.BagSource.slide_names`). Without it a slide is
        named by its position among its patient's slides (``"0"``, ``"1"``, ...).

    Raises
    ------
    ValueError
        When ``names`` lacks a patient, or names fewer slides than the patient has bags
        (the bags and the names came from different sources: a bug).
    """
    ids = []
    for key in keys:
        patient, index = patient_of(key), slide_index(key)
        if names is None:
            ids.append(str(index))
            continue
        known = names.get(patient, ())
        if index >= len(known):
            raise ValueError(f"no name for slide bag {index} of patient {patient!r} (names: {list(known)})")
        ids.append(str(known[index]))
    return ids


def slides_of(keys: Iterable[str], patients: Iterable[str]) -> tuple[str, ...]:
    """The slide keys of ``patients``, patient by patient in their order; patients without slides give none."""
    by_patient: dict[str, list[str]] = {}
    for key in keys:
        by_patient.setdefault(patient_of(key), []).append(key)
    return tuple(key for pid in patients for key in by_patient.get(pid, []))


def mean_over_slides(columns: Mapping[str, np.ndarray], keys: Sequence[str], patients: Sequence[str], task: Any) -> dict[str, np.ndarray]:
    """The patients' prediction columns: the mean of their slides' (``keys``, row for row).

    Numeric columns are averaged; a multiclass ``predicted`` is recomputed as the class of the
    highest mean ``prob_<class>``.
    """
    frame = pd.DataFrame({name: np.asarray(values) for name, values in columns.items()})
    numeric = [name for name in frame.columns if is_numeric_dtype(frame[name])]
    means = frame[numeric].groupby([patient_of(k) for k in keys], sort=False).mean().reindex(list(patients))
    out: dict[str, np.ndarray] = {name: means[name].to_numpy() for name in numeric}
    for name in frame.columns:
        if name in out:
            continue
        classes = list(getattr(task, "classes", []))
        probabilities = [f"prob_{c}" for c in classes]
        if name != "predicted" or not classes or not set(probabilities) <= set(numeric):
            raise ValueError(f"cannot average the prediction column {name!r} over slides")
        out[name] = np.asarray(classes, dtype=object)[means[probabilities].to_numpy().argmax(axis=1)]
    return {name: out[name] for name in columns}
