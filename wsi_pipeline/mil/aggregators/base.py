"""The aggregator interface, and the masked operations every aggregator builds on.

See the package docstring (:mod:`wsi_pipeline.mil.aggregators`) for the contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

#: The task's loss: ``task_loss(outputs (B, n_outputs), targets) -> scalar tensor``.
TaskLoss = Callable[[Tensor, Tensor], Tensor]


class Aggregator(nn.Module, ABC):
    """Base class of every aggregator: the interface, input checks and the default objective.

    Subclasses implement :meth:`forward`; an aggregator with an auxiliary objective (CLAM's
    instance clustering, DSMIL's max-instance head) also overrides :meth:`training_loss`.

    Parameters
    ----------
    in_dim
        Feature dimension D of each instance (the encoder's output size).
    n_outputs
        Number of outputs per bag: 1 for binary classification (one logit), the number of
        classes for multiclass, and so on; the task decides.
    """

    def __init__(self, in_dim: int, n_outputs: int) -> None:
        super().__init__()
        if in_dim < 1 or n_outputs < 1:
            raise ValueError(f"in_dim and n_outputs must be at least 1; got {in_dim} and {n_outputs}")
        self.in_dim = int(in_dim)
        self.n_outputs = int(n_outputs)

    @abstractmethod
    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Score a batch of padded bags.

        Parameters
        ----------
        bags
            Instance features, shape (B, N, D); rows where ``mask`` is False are padding and
            never influence a result.
        mask
            Bool, shape (B, N); True marks a real instance. Every bag has at least one.

        Returns
        -------
        outputs
            Shape (B, n_outputs): logits or whatever the task reads.
        attention
            Shape (B, N): non-negative, zero on padding, summing to one over each bag's real
            instances.
        """

    def training_loss(self, bags: Tensor, mask: Tensor, targets: Tensor, task_loss: TaskLoss) -> Tensor:
        """The training objective of one batch: by default the task's loss on the outputs.

        Aggregators with an auxiliary objective override this and combine the task's loss with
        their own terms, weighted as their paper's reference implementation does, from a single
        forward pass (so dropout masks and the attention are shared, as in the references).
        """
        outputs, _ = self(bags, mask)
        return task_loss(outputs, targets)


def check_inputs(bags: Tensor, mask: Tensor, in_dim: int) -> Tensor:
    """Check the shapes of a batch and return the bags with padding rows set to zero.

    Zeroing the padding means that no value there (NaN and inf included) can reach a result
    through a product with a zero weight.

    Raises
    ------
    ValueError
        For a wrong shape or dtype, or a bag without any real instance. A shape error here is
        a programming error (the caller built the batch), so it is a plain ValueError. The
        check for empty bags reads the mask's values, so it runs on the CPU only: on a GPU it
        would stall every training step on a device-to-host copy (an empty bag there gives NaN
        outputs, which training reports as a diverged loss).
    """
    if bags.ndim != 3:
        raise ValueError(f"bags must be a 3-D tensor (bags, instances, features); got shape {tuple(bags.shape)}")
    if bags.shape[1] == 0:
        raise ValueError("bags must contain at least one instance; got an empty batch of instances")
    if bags.shape[2] != in_dim:
        raise ValueError(f"bags have {bags.shape[2]} features per instance but the model expects {in_dim}")
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(bags.shape[:2]):
        raise ValueError(f"mask must be a bool tensor of shape {tuple(bags.shape[:2])}; got {mask.dtype} {tuple(mask.shape)}")
    if mask.device.type == "cpu" and not bool(mask.any(dim=1).all()):
        raise ValueError("every bag needs at least one real instance (a row of the mask is all False)")
    return bags.masked_fill(~mask.unsqueeze(-1), 0.0)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the instance axis (dim 1) of ``scores`` (B, N[, K]), zero where ``mask`` is False."""
    if scores.ndim == 3:
        mask = mask.unsqueeze(-1)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)


def uniform_attention(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """1/n on each bag's n real instances, 0 on padding: the attention of pooling baselines."""
    weights = mask.to(dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def masked_mean(bags: Tensor, mask: Tensor) -> Tensor:
    """Mean of each bag's real instances, (B, N, D) -> (B, D); padding rows must be zero."""
    return bags.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(bags.dtype)


def attention_pool(attention: Tensor, h: Tensor) -> Tensor:
    """Attention-weighted sum of instance embeddings: (B, N) x (B, N, H) -> (B, H)."""
    return torch.matmul(attention.unsqueeze(1), h).squeeze(1)


def one_hot_attention(index: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """Attention all on one instance per bag: ``index`` (B,) -> (B, n)."""
    return nn.functional.one_hot(index, n).to(dtype)


def instance_encoder(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """The per-instance embedding shared by several aggregators: Linear -> ReLU -> Dropout."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))


def pad_bags(
    bags: Sequence[np.ndarray | Tensor], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Stack bags of different sizes into one padded batch.

    Parameters
    ----------
    bags
        Instance features, each (N_i, D) with N_i >= 1 and a common D.
    device, dtype
        Where and as what the batch is made.

    Returns
    -------
    bags
        Shape (B, max N_i, D); padding rows are zero.
    mask
        Bool, shape (B, max N_i); True on each bag's first N_i rows.
    """
    if not bags:
        raise ValueError("pad_bags needs at least one bag")
    tensors = [torch.as_tensor(np.asarray(bag) if not isinstance(bag, Tensor) else bag) for bag in bags]
    if any(t.ndim != 2 or t.shape[0] == 0 for t in tensors) or len({t.shape[1] for t in tensors}) != 1:
        raise ValueError("pad_bags needs non-empty 2-D bags with a common feature dimension")
    longest = max(t.shape[0] for t in tensors)
    batch = torch.zeros((len(tensors), longest, tensors[0].shape[1]), dtype=dtype, device=device)
    mask = torch.zeros((len(tensors), longest), dtype=torch.bool, device=device)
    for i, t in enumerate(tensors):
        batch[i, : t.shape[0]] = t.to(device=device, dtype=dtype)
        mask[i, : t.shape[0]] = True
    return batch, mask
