"""Linear probe (``linear-probe``): one linear layer on the mean instance feature.

The standard way to judge an encoder's features on their own (as foundation-model papers
report them): no hidden layer, no settings. Permutation invariant; uniform attention.
"""

from __future__ import annotations

from torch import Tensor, nn

from wsi_pipeline.mil.aggregators.base import (
    Aggregator,
    check_inputs,
    masked_mean,
    uniform_attention,
)


class LinearProbe(Aggregator):
    """Mean of the real instances -> Linear(in_dim, n_outputs).

    Parameters
    ----------
    in_dim, n_outputs
        See :class:`~wsi_pipeline.mil.aggregators.base.Aggregator`.
    """

    def __init__(self, in_dim: int, n_outputs: int) -> None:
        super().__init__(in_dim, n_outputs)
        self.linear = nn.Linear(in_dim, n_outputs)

    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs (B, n_outputs) and uniform attention ``1/n`` over each bag's real instances."""
        bags = check_inputs(bags, mask, self.in_dim)
        return self.linear(masked_mean(bags, mask)), uniform_attention(mask, bags.dtype)
