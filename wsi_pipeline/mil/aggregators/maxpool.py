"""Max-pool baseline (``maxpool``): score every instance with a small MLP, keep each output's maximum.

The classic instance-level MIL assumption (a bag is positive when one instance is). Not from a
paper; hidden 128 and dropout 0.25 are this project's defaults, as for ``meanpool``.
Permutation invariant.

Attention: all of it on the instance whose score is the maximum of output 0 (the positive
logit of a binary task), ties going to the first such instance. It is the instance that
decided output 0; other outputs may have been decided by other instances.
"""

from __future__ import annotations

from torch import Tensor, nn

from wsi_pipeline.mil.aggregators.base import (
    Aggregator,
    check_inputs,
    instance_encoder,
    one_hot_attention,
)


class MaxPoolMLP(Aggregator):
    """Per-instance Linear -> ReLU -> Dropout -> Linear, then the maximum over real instances.

    Parameters
    ----------
    in_dim, n_outputs
        See :class:`~wsi_pipeline.mil.aggregators.base.Aggregator`.
    hidden_dim
        Width of the hidden layer.
    dropout
        Dropout after the hidden layer, active in training mode only.
    """

    def __init__(self, in_dim: int, n_outputs: int, hidden_dim: int = 128, dropout: float = 0.25) -> None:
        super().__init__(in_dim, n_outputs)
        self.mlp = nn.Sequential(instance_encoder(in_dim, hidden_dim, dropout), nn.Linear(hidden_dim, n_outputs))

    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs (B, n_outputs), and one-hot attention on the arg-max instance of output 0."""
        bags = check_inputs(bags, mask, self.in_dim)
        scores = self.mlp(bags).masked_fill(~mask.unsqueeze(-1), float("-inf"))  # (B, N, n_outputs)
        outputs, winners = scores.max(dim=1)
        return outputs, one_hot_attention(winners[:, 0], bags.shape[1], outputs.dtype)
