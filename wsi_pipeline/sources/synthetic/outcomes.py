"""Progression-free survival of synthetic patients, linked to their label."""

from __future__ import annotations

import numpy as np

#: Mean progression-free months of responders (label 1) and non-responders (label 0).
MEAN_PFS_RESPONDER = 30.0
MEAN_PFS_NON_RESPONDER = 9.0
#: Follow-up ends (censoring) uniformly within this window of months, as with staggered accrual.
FOLLOW_UP_MONTHS = (12.0, 48.0)


def sample_outcomes(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw (pfs_months, event) per patient.

    Progression times are exponential with a longer mean for responders; follow-up ends at an
    independent uniform time, and a patient still progression-free then is censored
    (``event = 0``, ``pfs_months`` = end of follow-up).

    Parameters
    ----------
    rng
        Source of randomness.
    labels
        0/1 per patient (1 = responder).

    Returns
    -------
    pfs_months : numpy.ndarray
        float64, rounded to 0.1 month, at least 0.1.
    event : numpy.ndarray
        int64, 1 = progression observed, 0 = censored.
    """
    labels = np.asarray(labels)
    means = np.where(labels == 1, MEAN_PFS_RESPONDER, MEAN_PFS_NON_RESPONDER)
    progression = rng.exponential(means)
    follow_up = rng.uniform(*FOLLOW_UP_MONTHS, size=labels.size)
    event = (progression <= follow_up).astype(np.int64)
    pfs = np.maximum(np.round(np.minimum(progression, follow_up), 1), 0.1)
    return pfs, event
