"""Label-permutation p-value of an AUC: how often shuffled labels rank as well as the real ones.

Under the null hypothesis that the scores carry no information about the labels, every
assignment of the labels to patients is equally likely. We shuffle the labels among patients
(a patient's rows keep one label together), recompute the AUC, and report the one-sided
p-value ``(1 + #{AUC_perm >= AUC}) / (1 + n_permutations)`` for the alternative that the model
ranks positives above negatives (AUC > 0.5). The ``+1`` counts the observed labelling as one
of the permutations, so the p-value is never 0 (Phipson and Smyth, 2010).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from wsi_pipeline.scoring.resample import group_codes


def _auc_from_ranks(ranks: np.ndarray, row_labels: np.ndarray) -> np.ndarray:
    # Mann-Whitney: (sum of positives' midranks - m(m+1)/2) / (m n), one value per labelling.
    m = row_labels.sum(axis=-1)
    n = row_labels.shape[-1] - m
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((row_labels * ranks).sum(axis=-1) - m * (m + 1) / 2.0) / (m * n)


def auc_permutation_p(
    labels: ArrayLike, scores: ArrayLike, *, groups: ArrayLike | None = None, n_permutations: int = 1000, seed: int = 0
) -> float:
    """One-sided label-permutation p-value of the AUC (see the module docstring).

    Parameters
    ----------
    labels
        0/1 per row; rows of one group must share their label.
    scores
        Score per row.
    groups
        Patient of each row (labels are shuffled among patients); default each row its own.
    n_permutations
        Shuffles.
    seed
        Seed of the ``numpy.random.Generator``.

    Returns
    -------
    float
        The p-value in (0, 1]; NaN when the labels hold one class.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    codes = group_codes(groups, y.size)
    n_groups = int(codes.max()) + 1 if y.size else 0
    group_labels = np.zeros(n_groups)
    group_labels[codes] = y
    if not np.array_equal(group_labels[codes], y):
        raise ValueError("every row of a group (patient) must have the same label")
    if y.min(initial=1.0) == y.max(initial=0.0):
        return float("nan")
    ranks = rankdata(s)
    observed = _auc_from_ranks(ranks, y)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(group_labels, (n_permutations, n_groups)), axis=1)
    permuted = _auc_from_ranks(ranks, shuffled[:, codes])
    # A tolerance so that ties with the observed AUC (equal up to rounding) count as reaching it.
    reached = np.count_nonzero(permuted >= observed - 1e-12)
    return float((1 + reached) / (1 + n_permutations))
