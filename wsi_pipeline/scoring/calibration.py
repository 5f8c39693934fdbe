"""Calibration of predicted probabilities: Brier score, expected calibration error, reliability bins.

Binning of the expected calibration error (ECE) and of the reliability diagram: ``n_bins``
equal-width bins of the predicted probability, [0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1] -- the
bins of scikit-learn's ``calibration_curve(strategy="uniform")``. The ECE is the mean over
rows of |observed frequency - mean predicted probability| of each row's bin, i.e. the bins'
gaps weighted by their share of rows; empty bins add nothing. Like the other weighted
metrics (:mod:`wsi_pipeline.scoring.binary`), every function takes a (resamples, rows) weight
matrix so bootstrap resamples are computed together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: Equal-width bins of the ECE and the reliability diagram.
DEFAULT_BINS = 10


def probability_bins(scores: ArrayLike, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """The bin 0..n_bins-1 of each probability (see the module docstring for the edges).

    Parameters
    ----------
    scores
        Probabilities in [0, 1].
    n_bins
        Number of equal-width bins.

    Returns
    -------
    numpy.ndarray
        int64 bin index per score.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    # side="left": a probability on an edge belongs to the bin below it, as in scikit-learn.
    return np.searchsorted(inner_edges, np.asarray(scores, dtype=np.float64), side="left").astype(np.int64)


def _weights(n: int, weights: ArrayLike | None) -> np.ndarray:
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    return w[None, :] if w.ndim == 1 else w


def brier_weighted(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
    """Mean squared difference between the probability and the 0/1 label, per resample.

    Parameters
    ----------
    labels
        0/1 per row.
    scores
        Probability of class 1 per row.
    weights
        (B, rows) counts; default the full data.

    Returns
    -------
    numpy.ndarray
        (B,) Brier scores (0 is perfect), NaN for an empty resample.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = _weights(y.size, weights)
    total = w.sum(axis=1)
    out = np.full(w.shape[0], np.nan)
    np.divide(w @ (s - y) ** 2, total, out=out, where=total > 0)
    return out


def ece_weighted(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None, *, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Expected calibration error per resample (binning in the module docstring).

    Parameters
    ----------
    labels
        0/1 per row.
    scores
        Probability of class 1 per row, in [0, 1].
    weights
        (B, rows) counts; default the full data.
    n_bins
        Equal-width bins.

    Returns
    -------
    numpy.ndarray
        (B,) ECEs in [0, 1], NaN for an empty resample.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = _weights(y.size, weights)
    # Per bin, |sum of w (y - s)| = (bin weight) * |observed frequency - mean probability|.
    one_hot = np.zeros((y.size, n_bins))
    one_hot[np.arange(y.size), probability_bins(s, n_bins)] = 1.0
    gaps = np.abs((w * (y - s)) @ one_hot).sum(axis=1)
    total = w.sum(axis=1)
    out = np.full(w.shape[0], np.nan)
    np.divide(gaps, total, out=out, where=total > 0)
    return out


@dataclass(frozen=True)
class ReliabilityBins:
    """The points of a reliability diagram: non-empty bins only.

    Attributes
    ----------
    mean_predicted
        Mean predicted probability in each bin.
    observed
        Fraction of positives in each bin.
    count
        Rows in each bin.
    edges
        All ``n_bins + 1`` bin edges.
    """

    mean_predicted: np.ndarray
    observed: np.ndarray
    count: np.ndarray
    edges: np.ndarray


def reliability_bins(labels: ArrayLike, scores: ArrayLike, n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Observed frequency against mean predicted probability per bin (the reliability diagram).

    Parameters
    ----------
    labels
        0/1 per row.
    scores
        Probability of class 1 per row.
    n_bins
        Equal-width bins.

    Returns
    -------
    ReliabilityBins
        The non-empty bins, in increasing probability.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    bins = probability_bins(s, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    used = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, weights=s, minlength=n_bins) / count
        observed = np.bincount(bins, weights=y, minlength=n_bins) / count
    return ReliabilityBins(mean_predicted[used], observed[used], count[used], np.linspace(0.0, 1.0, n_bins + 1))
