"""Mean-pool baseline (``meanpool``): average the instances, then a small MLP.

It answers "does attention help at all?": if an attention model does not beat it, the signal
is diffuse over the bag rather than carried by a few instances. Not from a paper; hidden 128
and dropout 0.25 are this project's defaults (those of ``abmil``, so the two compare at equal
capacity). Permutation invariant.
"""

from __future__ import annotations

from torch import Tensor, nn

from wsi_pipeline.mil.aggregators.base import (
    Aggregator,
    check_inputs,
    instance_encoder,
    masked_mean,
    uniform_attention,
)


class MeanPoolMLP(Aggregator):
    """Mean of the real instances -> Linear -> ReLU -> Dropout -> Linear.

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
        """Outputs (B, n_outputs) and uniform attention ``1/n`` over each bag's real instances."""
        bags = check_inputs(bags, mask, self.in_dim)
        return self.mlp(masked_mean(bags, mask)), uniform_attention(mask, bags.dtype)
