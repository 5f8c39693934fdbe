"""Bag aggregators: turn a bag of instance features (N, D) into one logit.

Every aggregator here follows the same contract so that training, inference and attention
export never need to know which one they hold:

    forward(bag: Tensor (N, D)) -> (logit: Tensor shape (), weights: Tensor (N,))

``weights`` are non-negative and sum to one over the bag: learned attention for attention
models, uniform for pooling baselines. The registry (``mil.registry``) is the one place that
knows every aggregator and its default hyper-parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_bag(bag: Tensor, in_dim: int) -> None:
    # A shape error here is a programming error (the caller built the bag), not a user error,
    # so a plain ValueError with the shapes is the most useful message.
    if bag.ndim != 2:
        raise ValueError(f"a bag must be a 2-D tensor (instances, features); got shape {tuple(bag.shape)}")
    if bag.shape[0] == 0:
        raise ValueError("a bag must contain at least one instance; got an empty bag")
    if bag.shape[1] != in_dim:
        raise ValueError(f"bag has {bag.shape[1]} features per instance but the model expects {in_dim}")


def _instance_encoder(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """The per-instance embedding shared by the aggregators: Linear -> ReLU -> Dropout."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))


class GatedABMIL(nn.Module):
    """Gated attention-based MIL (Ilse, Tomczak & Welling, ICML 2018).

    Each instance is embedded, ``h_i = MLP(x_i)``; its attention score is
    ``s_i = w^T (tanh(V h_i) * sigmoid(U h_i))``; the weights ``a = softmax(s)`` over the
    bag pool the embeddings, ``z = sum_i a_i h_i``; a linear layer maps ``z`` to one logit.

    Parameters
    ----------
    in_dim
        Feature dimension D of each instance (the encoder's output size).
    hidden_dim
        Size of the instance embedding ``h``.
    attention_dim
        Size of the gated attention branch (rows of V and U).
    dropout
        Dropout on the instance embedding, active in training mode only.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 128, attention_dim: int = 64, dropout: float = 0.25) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.encoder = _instance_encoder(in_dim, hidden_dim, dropout)
        self.attention_v = nn.Linear(hidden_dim, attention_dim)
        self.attention_u = nn.Linear(hidden_dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(hidden_dim, 1)

    def forward(self, bag: Tensor) -> tuple[Tensor, Tensor]:
        """Score one bag.

        Parameters
        ----------
        bag
            Instance features, shape (N, D) with N >= 1.

        Returns
        -------
        logit
            The bag logit, a 0-d tensor.
        weights
            Attention weights, shape (N,), summing to one.
        """
        _check_bag(bag, self.in_dim)
        h = self.encoder(bag)  # (N, hidden)
        gate = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        scores = self.attention_w(gate).squeeze(-1)  # (N,)
        weights = torch.softmax(scores, dim=0)
        pooled = weights @ h  # (hidden,)
        logit = self.classifier(pooled).squeeze(-1)  # ()
        return logit, weights


class MeanPoolMLP(nn.Module):
    """Baseline: average the instances, then a small MLP to one logit.

    It answers "does attention help at all?" — if ABMIL does not beat it, the signal is
    diffuse over the bag rather than carried by a few instances.

    Parameters
    ----------
    in_dim
        Feature dimension D of each instance.
    hidden_dim
        Width of the hidden layer.
    dropout
        Dropout after the hidden layer, active in training mode only.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.mlp = nn.Sequential(_instance_encoder(in_dim, hidden_dim, dropout), nn.Linear(hidden_dim, 1))

    def forward(self, bag: Tensor) -> tuple[Tensor, Tensor]:
        """Score one bag.

        Parameters
        ----------
        bag
            Instance features, shape (N, D) with N >= 1.

        Returns
        -------
        logit
            The bag logit, a 0-d tensor.
        weights
            Uniform weights ``1/N``, shape (N,), so attention export works for every aggregator.
        """
        _check_bag(bag, self.in_dim)
        logit = self.mlp(bag.mean(dim=0)).squeeze(-1)
        weights = torch.full((bag.shape[0],), 1.0 / bag.shape[0], dtype=bag.dtype, device=bag.device)
        return logit, weights
