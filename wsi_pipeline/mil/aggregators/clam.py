"""CLAM (Lu et al., Nature Biomedical Engineering 2021): ``clam-sb`` and ``clam-mb``.

Clustering-constrained attention MIL. Instances are embedded (Linear -> ReLU -> Dropout) and
scored by a gated attention network; the attention pools the embeddings into a bag embedding
that a linear classifier scores. The single-branch model (SB) has one attention branch shared
by all classes; the multi-branch model (MB) has one branch, one pooled embedding and one
linear scorer per class.

During training an instance-level clustering loss is added: for a bag of class ``y``, the
``k`` most and ``k`` least attended instances (under the attention branch of class ``y``) get
pseudo-labels 1 and 0, and a small per-class instance classifier (Linear(hidden, 2)) is trained
on them. With ``subtyping`` (mutually exclusive classes), the ``k`` most attended instances
under every *other* class's branch are also pushed to 0 by that class's instance classifier,
and the sum over classes is divided by the number of classes. The step's loss is
``bag_weight * task_loss + (1 - bag_weight) * instance_loss``; evaluation and model selection
use the task's loss on the outputs only. Permutation invariant.

Defaults follow the reference implementation (mahmoodlab/CLAM): the "small" model size of
``models/model_clam.py`` (hidden 512, attention 256), ``main.py``'s ``--drop_out 0.25``,
``--B 8`` (``k_sample``), ``--bag_weight 0.7`` and ``subtyping`` off; the instance loss is the
smooth top-1 SVM (Berrada et al. 2018, ``smooth-topk`` with alpha = 1, tau = 1) as in the
repository's documented training commands (``--inst_loss svm``; the argument's own default
falls back to cross-entropy, ``instance_loss: ce`` here).

Where this module departs from the reference, and why:

* Binary tasks give one output (a logit). The instance classifiers still follow the reference's
  two classes (negative, positive), and CLAM-MB keeps a branch per class; its logit is the
  positive class's score minus the negative class's, which is the reference's two-class
  softmax written as a sigmoid.
* A bag with fewer than ``2 * k_sample`` instances samples ``k = n // 2`` from each end so the
  two pseudo-label sets never overlap (the reference fails on bags smaller than ``k_sample``);
  a one-instance bag adds no instance loss.
* One ``dropout`` setting is used for the embedding and the attention branches (the reference
  uses the same 0.25 in both places).
* The returned attention is that of the branch behind output 0: CLAM-SB's only branch;
  CLAM-MB's positive-class branch for a binary task, class 0's branch otherwise.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsi_pipeline.mil.aggregators.base import (
    Aggregator,
    TaskLoss,
    attention_pool,
    check_inputs,
    instance_encoder,
    masked_softmax,
)

INSTANCE_LOSSES = ("svm", "ce")


def smooth_top1_svm(logits: Tensor, targets: Tensor, alpha: float = 1.0, tau: float = 1.0) -> Tensor:
    """Smooth top-1 multiclass SVM loss (Berrada, Zisserman & Kumar, ICLR 2018), mean over rows.

    ``loss_i = tau * log sum_j exp((s_ij + alpha * [j != y_i] - s_iy) / tau)``; for two classes
    it is ``softplus(s_other - s_true + alpha)`` at ``tau = 1``. Computed with logsumexp for
    every row (the reference switches to the hard max only where scores are so large that the
    two agree to float precision).
    """
    margins = alpha * (1.0 - F.one_hot(targets, logits.shape[1]).to(logits.dtype))
    true_scores = logits.gather(1, targets.unsqueeze(1))
    return (tau * torch.logsumexp((logits + margins - true_scores) / tau, dim=1)).mean()


def instance_clustering_loss(
    attention: Tensor, h: Tensor, classifier: nn.Module, k: int, in_class: bool, loss: Literal["svm", "ce"]
) -> Tensor:
    """CLAM's instance loss for one bag and one class's instance classifier.

    Parameters
    ----------
    attention
        Shape (n,): the bag's attention under that class's branch, real instances only.
    h
        Shape (n, hidden): the instance embeddings, same order.
    classifier
        The class's instance classifier, hidden -> 2 logits.
    k
        Instances taken from each end of the attention ranking (1 <= k <= n // 2 for in-class).
    in_class
        True when the bag is of this class: the ``k`` most attended instances get label 1 and
        the ``k`` least attended label 0. False (subtyping only): the ``k`` most attended get 0.
    loss
        ``"svm"`` (smooth top-1 SVM) or ``"ce"`` (cross-entropy), averaged over the instances.
    """
    top = torch.topk(attention, k).indices
    if in_class:
        bottom = torch.topk(-attention, k).indices
        chosen = torch.cat([top, bottom])
        labels = torch.cat([torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)])
    else:
        chosen = top
        labels = torch.zeros(k, dtype=torch.long)
    logits = classifier(h[chosen])
    labels = labels.to(logits.device)
    return smooth_top1_svm(logits, labels) if loss == "svm" else F.cross_entropy(logits, labels)


class _GatedAttention(nn.Module):
    """CLAM's gated attention network: ``c^T (tanh(a h) * sigmoid(b h))``, one score per branch."""

    def __init__(self, in_dim: int, attention_dim: int, n_branches: int, dropout: float) -> None:
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(in_dim, attention_dim), nn.Tanh(), nn.Dropout(dropout))
        self.sigmoid_branch = nn.Sequential(nn.Linear(in_dim, attention_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.scores = nn.Linear(attention_dim, n_branches)

    def forward(self, h: Tensor) -> Tensor:
        return self.scores(self.tanh_branch(h) * self.sigmoid_branch(h))  # (B, N, n_branches)


class _CLAM(Aggregator):
    """The parts CLAM-SB and CLAM-MB share; see the module docstring."""

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        hidden_dim: int,
        attention_dim: int,
        dropout: float,
        k_sample: int,
        bag_weight: float,
        instance_loss: str,
        subtyping: bool,
        multi_branch: bool,
    ) -> None:
        super().__init__(in_dim, n_outputs)
        if instance_loss not in INSTANCE_LOSSES:
            raise ValueError(f"instance_loss must be one of {INSTANCE_LOSSES}; got {instance_loss!r}")
        if k_sample < 1 or not 0.0 <= bag_weight <= 1.0:
            raise ValueError(f"need k_sample >= 1 and bag_weight in [0, 1]; got {k_sample} and {bag_weight}")
        # A binary task's single logit still has the reference's two classes behind it.
        self.n_classes = 2 if n_outputs == 1 else n_outputs
        self.k_sample = k_sample
        self.bag_weight = bag_weight
        self.instance_loss = instance_loss
        self.subtyping = subtyping
        self.multi_branch = multi_branch
        self.encoder = instance_encoder(in_dim, hidden_dim, dropout)
        self.attention = _GatedAttention(hidden_dim, attention_dim, self.n_classes if multi_branch else 1, dropout)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden_dim, 2) for _ in range(self.n_classes))

    def _branch(self, class_index: int) -> int:
        """The attention branch that class ``class_index`` is judged under."""
        return class_index if self.multi_branch else 0

    @abstractmethod
    def _bag_scores(self, attention: Tensor, h: Tensor) -> Tensor:
        """Bag outputs (B, n_outputs) from the attention (B, N, branches) and embeddings (B, N, hidden)."""

    def _run(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Outputs (B, n_outputs), embeddings (B, N, hidden), attention (B, N, branches)."""
        bags = check_inputs(bags, mask, self.in_dim)
        h = self.encoder(bags)
        attention = masked_softmax(self.attention(h), mask)
        return self._bag_scores(attention, h), h, attention

    def forward(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs (B, n_outputs) and the attention of the branch behind output 0 (B, N)."""
        outputs, _, attention = self._run(bags, mask)
        shown = self._branch(1) if self.n_outputs == 1 else self._branch(0)
        return outputs, attention[..., shown]

    def training_loss(self, bags: Tensor, mask: Tensor, targets: Tensor, task_loss: TaskLoss) -> Tensor:
        """``bag_weight * task_loss(outputs, targets) + (1 - bag_weight) * instance loss``.

        ``targets`` must hold one class index per bag (0/1 for a binary task); the instance
        loss is the mean over the batch's bags.
        """
        outputs, h, attention = self._run(bags, mask)
        bag_loss = task_loss(outputs, targets)
        classes = self._class_indices(targets, bags.shape[0])
        per_bag = [self.bag_instance_loss(attention[b][mask[b]], h[b][mask[b]], classes[b]) for b in range(bags.shape[0])]
        return self.bag_weight * bag_loss + (1.0 - self.bag_weight) * torch.stack(per_bag).mean()

    def bag_instance_loss(self, attention: Tensor, h: Tensor, label: int) -> Tensor:
        """The instance clustering loss of one bag of class ``label``.

        ``attention`` (n, branches) and ``h`` (n, hidden) hold the bag's real instances only.
        """
        k = min(self.k_sample, h.shape[0] // 2)
        total = h.new_zeros(())
        if k == 0:
            return total
        for c, classifier in enumerate(self.instance_classifiers):
            if c == label or self.subtyping:
                scores = attention[:, self._branch(c)]
                total = total + instance_clustering_loss(scores, h, classifier, k, c == label, self.instance_loss)
        return total / self.n_classes if self.subtyping else total

    def _class_indices(self, targets: Tensor, batch: int) -> list[int]:
        y = torch.as_tensor(targets).detach().reshape(-1)
        if y.numel() != batch or (y.is_floating_point() and not torch.equal(y, y.round())):
            raise ValueError(
                f"CLAM's instance clustering needs one class index per bag ({batch} bags); got targets of shape "
                f"{tuple(torch.as_tensor(targets).shape)}"
            )
        classes = [int(v) for v in y.long().tolist()]
        if any(not 0 <= c < self.n_classes for c in classes):
            raise ValueError(f"CLAM class targets must be in [0, {self.n_classes}); got {sorted(set(classes))}")
        return classes


class CLAMSB(_CLAM):
    """CLAM with a single attention branch (registry name ``clam-sb``).

    Parameters
    ----------
    in_dim, n_outputs
        See :class:`~wsi_pipeline.mil.aggregators.base.Aggregator`.
    hidden_dim
        Size of the instance embedding (reference: 512).
    attention_dim
        Size of the gated attention branches (reference: 256).
    dropout
        Dropout on the embedding and in the attention network (reference: 0.25).
    k_sample
        Instances taken from each end of the attention ranking for the instance loss (reference: 8).
    bag_weight
        Weight of the task's loss; the instance loss gets ``1 - bag_weight`` (reference: 0.7).
    instance_loss
        ``"svm"`` (smooth top-1 SVM) or ``"ce"`` (cross-entropy).
    subtyping
        Classes are mutually exclusive subtypes: also push other classes' top instances to 0.
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        hidden_dim: int = 512,
        attention_dim: int = 256,
        dropout: float = 0.25,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        instance_loss: str = "svm",
        subtyping: bool = False,
    ) -> None:
        super().__init__(
            in_dim, n_outputs, hidden_dim, attention_dim, dropout, k_sample, bag_weight, instance_loss, subtyping,
            multi_branch=False,
        )
        self.classifier = nn.Linear(hidden_dim, n_outputs)

    def _bag_scores(self, attention: Tensor, h: Tensor) -> Tensor:
        return self.classifier(attention_pool(attention[..., 0], h))


class CLAMMB(_CLAM):
    """CLAM with one attention branch and one bag scorer per class (registry name ``clam-mb``).

    Parameters are those of :class:`CLAMSB`.
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int,
        hidden_dim: int = 512,
        attention_dim: int = 256,
        dropout: float = 0.25,
        k_sample: int = 8,
        bag_weight: float = 0.7,
        instance_loss: str = "svm",
        subtyping: bool = False,
    ) -> None:
        super().__init__(
            in_dim, n_outputs, hidden_dim, attention_dim, dropout, k_sample, bag_weight, instance_loss, subtyping,
            multi_branch=True,
        )
        self.classifiers = nn.ModuleList(nn.Linear(hidden_dim, 1) for _ in range(self.n_classes))

    def _bag_scores(self, attention: Tensor, h: Tensor) -> Tensor:
        pooled = torch.matmul(attention.transpose(1, 2), h)  # (B, classes, hidden)
        scores = torch.cat([scorer(pooled[:, c]) for c, scorer in enumerate(self.classifiers)], dim=1)
        # One output for a binary task: the two-class softmax as a sigmoid of the score difference.
        return scores[:, 1:2] - scores[:, 0:1] if self.n_outputs == 1 else scores
