"""DSMIL (Li, Li & Eliceiri, CVPR 2021): ``dsmil``.

Dual-stream MIL. The instance stream scores every instance with a linear classifier and takes,
per output, the maximum over the bag; the instance reaching it is that output's *critical
instance*. The bag stream embeds every instance as a query ``q_i``, attends to each instance by
the similarity of its query to the critical instance's, ``a_i = softmax_i(<q_i, q_crit> /
sqrt(d))``, pools the (identity) values with those weights, and scores the pooled vector with a
1-D convolution spanning the whole feature vector (a linear layer per output that also mixes
the outputs' pooled vectors). Permutation invariant.

Training follows the reference's objective: ``0.5 * task_loss(bag stream) + 0.5 *
task_loss(instance-max stream)``. The output is the reference's averaged prediction, the mean
of the two streams' sigmoid probabilities, written as a logit: ``logit(0.5 * sigmoid(bag) +
0.5 * sigmoid(max))`` per output (so a binary task's sigmoid of it is exactly the reference's
score; the reference treats every output as an independent sigmoid, multiclass included).

Defaults follow the reference implementation (binli123/dsmil-wsi, ``dsmil.py`` and
``train_tcga.py``): a non-linear query network (Linear(D, 128) -> ReLU -> Linear(128, 128) ->
Tanh), identity values (``passing_v`` off; its dropout ``dropout_node`` 0), no patch dropout.
The reference starts from a stored initialisation (``init.pth``); here initialisation is
PyTorch's default under the run's seed. Attention: the bag stream's weights for output 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsi_pipeline.mil.aggregators.base import (
    Aggregator,
    TaskLoss,
    check_inputs,
    masked_softmax,
)


class DSMIL(Aggregator):
    """Dual-stream MIL (registry name ``dsmil``); see the module docstring.

    Parameters
    ----------
    in_dim, n_outputs
        See :class:`~wsi_pipeline.mil.aggregators.base.Aggregator`.
    q_dim
        Size of the queries (reference: 128).
    nonlinear_q
        Two-layer query network with ReLU and Tanh (reference default) instead of one linear layer.
    passing_v
        Values through Dropout -> Linear(D, D) -> ReLU instead of the identity (reference: off).
    dropout_v
        Dropout before the value layer, used only with ``passing_v`` (reference: 0).
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        q_dim: int = 128,
        nonlinear_q: bool = True,
        passing_v: bool = False,
        dropout_v: float = 0.0,
    ) -> None:
        super().__init__(in_dim, n_outputs)
        self.instance_classifier = nn.Linear(in_dim, n_outputs)
        self.query = (
            nn.Sequential(nn.Linear(in_dim, q_dim), nn.ReLU(), nn.Linear(q_dim, q_dim), nn.Tanh())
            if nonlinear_q
            else nn.Linear(in_dim, q_dim)
        )
        self.value = (
            nn.Sequential(nn.Dropout(dropout_v), nn.Linear(in_dim, in_dim), nn.ReLU()) if passing_v else nn.Identity()
        )
        self.bag_classifier = nn.Conv1d(n_outputs, n_outputs, kernel_size=in_dim)

    def streams(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The two streams' scores, instance-max (B, n_outputs) and bag (B, n_outputs), and attention (B, N, n_outputs)."""
        bags = check_inputs(bags, mask, self.in_dim)
        instance_scores = self.instance_classifier(bags).masked_fill(~mask.unsqueeze(-1), float("-inf"))
        max_scores, critical = instance_scores.max(dim=1)  # (B, n_outputs) each
        queries = self.query(bags)  # (B, N, q)
        critical_queries = queries.gather(1, critical.unsqueeze(-1).expand(-1, -1, queries.shape[-1]))
        similarity = queries @ critical_queries.transpose(1, 2) / math.sqrt(queries.shape[-1])  # (B, N, n_outputs)
        attention = masked_softmax(similarity, mask)
        pooled = attention.transpose(1, 2) @ self.value(bags)  # (B, n_outputs, D)
        bag_scores = self.bag_classifier(pooled).squeeze(-1)
        return max_scores, bag_scores, attention

    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs ``logit(mean of the two streams' probabilities)`` (B, n_outputs); attention of output 0 (B, N)."""
        max_scores, bag_scores, attention = self.streams(bags, mask)
        # log p - log(1 - p) with p the mean of two sigmoids, computed without leaving log space.
        log_p = torch.logaddexp(F.logsigmoid(max_scores), F.logsigmoid(bag_scores))
        log_not_p = torch.logaddexp(F.logsigmoid(-max_scores), F.logsigmoid(-bag_scores))
        return log_p - log_not_p, attention[..., 0]

    def training_loss(self, bags: Tensor, mask: Tensor, targets: Tensor, task_loss: TaskLoss) -> Tensor:
        """``0.5 * task_loss(bag stream) + 0.5 * task_loss(instance-max stream)``, as the reference trains."""
        max_scores, bag_scores, _ = self.streams(bags, mask)
        return 0.5 * task_loss(bag_scores, targets) + 0.5 * task_loss(max_scores, targets)
