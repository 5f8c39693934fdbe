"""Attention-based MIL (Ilse, Tomczak & Welling, ICML 2018): gated (``abmil``) and plain (``abmil-plain``).

Each instance is embedded, ``h_i = MLP(x_i)``; an attention score ``s_i`` is computed per
instance; the weights ``a = softmax(s)`` over the bag's real instances pool the embeddings,
``z = sum_i a_i h_i``; a linear layer maps ``z`` to the outputs. Permutation invariant.

Defaults: hidden 128, attention 64, dropout 0.25. These are this project's (the demo's since
its first version, kept so results stay comparable), not the paper's: the reference
implementation (AMLab-Amsterdam/AttentionDeepMIL, ``model.py``) uses an embedding of L = 500,
an attention branch of D = 128 and no dropout, set ``hidden_dim: 500, attention_dim: 128,
dropout: 0`` in ``model.aggregator_params`` to match it.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from wsi_pipeline.mil.aggregators.base import (
    Aggregator,
    attention_pool,
    check_inputs,
    instance_encoder,
    masked_softmax,
)


class _AttentionMIL(Aggregator):
    """Shared body of both variants; a subclass defines the attention branch and :meth:`_scores`."""

    def __init__(self, in_dim: int, n_outputs: int, hidden_dim: int, dropout: float) -> None:
        super().__init__(in_dim, n_outputs)
        self.encoder = instance_encoder(in_dim, hidden_dim, dropout)

    @abstractmethod
    def _scores(self, h: Tensor) -> Tensor:
        """Attention scores (B, N) of the instance embeddings ``h`` (B, N, hidden)."""

    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Score padded bags (B, N, D) -> outputs (B, n_outputs), attention (B, N)."""
        bags = check_inputs(bags, mask, self.in_dim)
        h = self.encoder(bags)  # (B, N, hidden)
        attention = masked_softmax(self._scores(h), mask)  # (B, N)
        return self.classifier(attention_pool(attention, h)), attention


class GatedABMIL(_AttentionMIL):
    """Gated attention MIL: ``s_i = w^T (tanh(V h_i) * sigmoid(U h_i))`` (registry name ``abmil``).

    Parameters
    ----------
    in_dim, n_outputs
        See :class:`~wsi_pipeline.mil.aggregators.base.Aggregator`.
    hidden_dim
        Size of the instance embedding ``h``.
    attention_dim
        Size of the gated attention branch (rows of V and U).
    dropout
        Dropout on the instance embedding, active in training mode only.
    """

    def __init__(
        self, in_dim: int, n_outputs: int, hidden_dim: int = 128, attention_dim: int = 64, dropout: float = 0.25
    ) -> None:
        super().__init__(in_dim, n_outputs, hidden_dim, dropout)
        self.attention_v = nn.Linear(hidden_dim, attention_dim)
        self.attention_u = nn.Linear(hidden_dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(hidden_dim, n_outputs)

    def _scores(self, h: Tensor) -> Tensor:
        gate = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        return self.attention_w(gate).squeeze(-1)


class ABMIL(_AttentionMIL):
    """Attention MIL without the gate: ``s_i = w^T tanh(V h_i)`` (registry name ``abmil-plain``).

    Parameters are those of :class:`GatedABMIL`.
    """

    def __init__(
        self, in_dim: int, n_outputs: int, hidden_dim: int = 128, attention_dim: int = 64, dropout: float = 0.25
    ) -> None:
        super().__init__(in_dim, n_outputs, hidden_dim, dropout)
        self.attention_v = nn.Linear(hidden_dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(hidden_dim, n_outputs)

    def _scores(self, h: Tensor) -> Tensor:
        return self.attention_w(torch.tanh(self.attention_v(h))).squeeze(-1)
