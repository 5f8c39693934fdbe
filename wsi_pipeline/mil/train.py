"""Training one aggregator on one fold, with early stopping on the inner validation set.

Model selection (the epoch whose weights are kept) looks only at the validation patients
given here, which ``mil.splits`` carves out of the fold's training patients. Test patients
never enter this module: predictions for them are made afterwards with :func:`predict_bags`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.aggregators.base import Aggregator
from wsi_pipeline.mil.bags import bag_tensor, binary_label, check_bags
from wsi_pipeline.mil.registry import (
    available_aggregators,
    build_aggregator,
    resolve_params,
)
from wsi_pipeline.mil.splits import assert_disjoint

if TYPE_CHECKING:
    from wsi_pipeline.config.workflow import ModelConfig

# Two validation losses closer than this count as a tie, broken by validation AUC. Losses
# on a few dozen patients wobble at this scale from noise alone.
LOSS_TIE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """How to train an aggregator on one fold: values already checked, taken as they are.

    Build it with :meth:`from_model` from the workflow's ``model`` section, whose config model
    checks every value (and the aggregators' settings against the registry) when the workflow
    is loaded; nothing here checks them a second time.

    Attributes
    ----------
    max_epochs
        Upper bound on passes over the fit patients.
    patience
        Stop after this many epochs without a better validation score.
    lr, weight_decay
        AdamW settings.
    max_instances
        During training only, each step uses a random subset of at most this many instances
        of the bag (faster steps, and a regulariser against memorising single tiles).
        ``None`` uses whole bags. Validation and prediction always use whole bags.
    aggregator_params
        Aggregator name -> the settings the workflow gives it beyond the registry's defaults
        (:meth:`~wsi_pipeline.config.workflow.ModelConfig.aggregator_settings`); an aggregator
        missing here is built with its defaults.
    """

    max_epochs: int
    patience: int
    lr: float
    weight_decay: float
    max_instances: int | None
    aggregator_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: ModelConfig) -> TrainConfig:
        """The training settings of a validated ``model`` section, for every registered aggregator."""
        return cls(
            max_epochs=model.max_epochs,
            patience=model.patience,
            lr=model.lr,
            weight_decay=model.weight_decay,
            max_instances=model.max_instances,
            aggregator_params={name: model.aggregator_settings(name) for name in available_aggregators()},
        )

    def params_for(self, name: str) -> dict[str, Any]:
        """The settings aggregator ``name`` is built with, beyond its defaults."""
        return dict(self.aggregator_params.get(name, {}))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate without dropout and without gradients, then restore the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def resolve_device(requested: str | torch.device) -> torch.device:
    """Return the torch device to train on, checking that this process has it.

    Parameters
    ----------
    requested
        ``'auto'`` (the first CUDA device when this process sees one, else the CPU),
        ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or a :class:`torch.device`.

    Raises
    ------
    WSIPipelineError
        When a CUDA device is asked for but this process does not see it: resolved on the
        worker that trains, since the client may have no GPU while the workers do.
    """
    if isinstance(requested, str) and requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise WSIPipelineError(
            f"MIL training asked for {device} but this process sees {torch.cuda.device_count()} CUDA device(s)",
            where="model.device",
            fix="use 'auto' (CUDA when present, else the CPU) or 'cpu', or run training on workers with a GPU",
        )
    return device


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _one_bag(bag: np.ndarray | Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """A whole bag as a batch of one: bags (1, N, D) float32 and an all-True mask (1, N)."""
    tensor = bag if isinstance(bag, Tensor) else bag_tensor(bag, device)
    return tensor.unsqueeze(0), torch.ones((1, tensor.shape[0]), dtype=torch.bool, device=tensor.device)


def bag_logits(model: Aggregator, bags: Mapping[str, np.ndarray], ids: Sequence[str]) -> np.ndarray:
    """Return the model's logit for each bag, whole bags, one at a time, in eval mode.

    Parameters
    ----------
    model
        An aggregator with one output (a binary task's logit).
    bags
        Patient id -> instance features (N, D).
    ids
        The patients to score, in the order of the result.

    Returns
    -------
    np.ndarray
        float64 logits, shape (len(ids),).
    """
    if model.n_outputs != 1:
        raise ValueError(f"bag_logits reads one logit per bag; this aggregator has {model.n_outputs} outputs")
    device = _model_device(model)
    with _eval_mode(model):
        logits = [model(*_one_bag(bags[pid], device))[0][0, 0].item() for pid in ids]
    return np.asarray(logits, dtype=np.float64)


def predict_bags(model: Aggregator, bags: Mapping[str, np.ndarray], ids: Sequence[str]) -> np.ndarray:
    """Return the predicted probability of the positive class for each bag.

    Parameters
    ----------
    model
        A trained aggregator.
    bags
        Patient id -> instance features (N, D); float16 is fine.
    ids
        The patients to score, in the order of the result.

    Returns
    -------
    np.ndarray
        float64 probabilities in [0, 1], shape (len(ids),).
    """
    logits = bag_logits(model, bags, ids)
    return 1.0 / (1.0 + np.exp(-logits))


def attention_weights(model: Aggregator, bag: np.ndarray) -> np.ndarray:
    """Return the aggregator's attention on every instance of one whole bag.

    Parameters
    ----------
    model
        A trained aggregator.
    bag
        Instance features (N, D).

    Returns
    -------
    np.ndarray
        float32 weights, shape (N,), summing to one (what each aggregator reports is in its
        module's docstring: uniform for mean pooling, one-hot for max pooling).
    """
    with _eval_mode(model):
        _, weights = model(*_one_bag(bag, _model_device(model)))
    return weights[0].cpu().numpy().astype(np.float32)


def validation_scores(logits: np.ndarray, labels: np.ndarray, pos_weight: float) -> tuple[float, float]:
    """Return (loss, AUC) of logits against 0/1 labels, the numbers model selection uses.

    The loss is the training objective: binary cross-entropy with ``pos_weight`` on positives,
    averaged over bags. The AUC is NaN when the labels hold only one class.
    """
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float64))
    loss = criterion(torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.float64)).item()
    auc = float(roc_auc_score(labels, logits)) if len(np.unique(labels)) == 2 else math.nan
    return loss, auc


def _improves(loss: float, auc: float, best_loss: float, best_auc: float) -> bool:
    """Lower validation loss wins; a loss within the tie tolerance wins on higher AUC."""
    if loss < best_loss - LOSS_TIE_TOLERANCE:
        return True
    if abs(loss - best_loss) <= LOSS_TIE_TOLERANCE:
        return _auc_rank(auc) > _auc_rank(best_auc)
    return False


def _auc_rank(auc: float) -> float:
    """An undefined (NaN) AUC never wins a tie."""
    return -math.inf if math.isnan(auc) else auc


def _training_bag(
    bag: np.ndarray, max_instances: int | None, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The bag as a batch of one (float32, all-True mask), randomly subsampled to ``max_instances`` rows.

    The kept rows stay in the bag's order: it reads memory in order, and the order matters to
    an aggregator with positional encoding (TransMIL).
    """
    bag = np.asarray(bag)
    if max_instances is not None and bag.shape[0] > max_instances:
        keep = torch.randperm(bag.shape[0], generator=generator)[:max_instances]
        bag = bag[np.sort(keep.numpy())]
    return _one_bag(bag, device)


def fit_aggregator(
    name: str,
    bags: Mapping[str, np.ndarray],
    labels: Mapping[str, int],
    fit_ids: Sequence[str],
    val_ids: Sequence[str],
    config: TrainConfig,
    seed: int,
    *,
    device: str | torch.device = "cpu",
) -> tuple[Aggregator, dict[str, Any]]:
    """Train an aggregator on ``fit_ids``, selecting the epoch on ``val_ids``.

    One bag per step (bags differ in size); AdamW; binary cross-entropy with
    ``pos_weight = n_negative / n_positive`` of the fit patients, so the minority class is
    not ignored. Each step minimises the aggregator's ``training_loss``: that loss alone, or
    with CLAM's instance clustering loss or DSMIL's second stream. After every epoch the whole
    validation bags are scored (the outputs' loss, for every aggregator alike); the weights of
    the best epoch (lowest validation loss, ties within ``LOSS_TIE_TOLERANCE`` broken by
    higher validation AUC) are restored before returning. Training stops after
    ``config.patience`` epochs without improvement.

    Parameters
    ----------
    name
        A registered aggregator name.
    bags
        Patient id -> instance features (N, D), any float dtype (cast to float32 per step,
        so float16 bags from the store are not duplicated in memory).
    labels
        Patient id -> 0/1.
    fit_ids, val_ids
        Disjoint patient groups: trained on, and used for early stopping/model selection.
        Never pass test patients here.
    config
        Training settings; the aggregator is built with ``config.params_for(name)``.
    seed
        Seeds initialisation, dropout, shuffling and instance subsampling. Torch's global
        RNG is seeded inside a fork, so the caller's RNG state is left as it was.
    device
        Where to train: ``"cpu"`` by default, ``"auto"``, ``"cuda"``, ``"cuda:N"`` (see
        :func:`resolve_device`). Bags move to it one step at a time; scores come back as numpy.

    Returns
    -------
    model
        The aggregator with the best epoch's weights, in eval mode.
    history
        ``train_loss`` (the training objective), ``val_loss`` (the task's loss on the outputs),
        ``val_auc``: one value per epoch run; ``best_epoch``: 0-based index into those lists
        of the restored weights; also ``best_val_loss``, ``best_val_auc``, ``epochs_run``,
        ``stopped_early``, ``pos_weight``, ``n_fit``, ``n_val``, ``seconds`` and
        ``aggregator_params`` (every setting the model was built with).

    Raises
    ------
    WSIPipelineError
        For missing/bad bags or labels, empty groups, a fit set with one class, invalid
        aggregator settings, or a diverged (non-finite) loss.
    """
    started = time.perf_counter()
    fit_ids, val_ids = list(fit_ids), list(val_ids)
    if not fit_ids or not val_ids:
        raise WSIPipelineError(
            f"training needs fit and validation patients; got {len(fit_ids)} fit and {len(val_ids)} validation",
            where=f"aggregator {name}",
            fix="use more patients or a val_fraction that leaves both groups non-empty",
        )
    assert_disjoint(fit_ids, val_ids, "fit vs val")
    in_dim = check_bags(bags, fit_ids + val_ids)
    y_fit = np.array([binary_label(labels, pid) for pid in fit_ids], dtype=np.float64)
    y_val = np.array([binary_label(labels, pid) for pid in val_ids], dtype=np.float64)
    n_pos = int(y_fit.sum())
    if n_pos in (0, len(y_fit)):
        raise WSIPipelineError(
            f"all {len(y_fit)} fit patients have label {int(y_fit[0])}; training needs both classes",
            where=f"aggregator {name}",
            fix="plan folds with mil.splits.plan_folds (stratified) or add patients of the other class",
        )
    pos_weight = (len(y_fit) - n_pos) / n_pos
    params = resolve_params(name, config.params_for(name))
    device = resolve_device(device)
    # Fork the RNG so seeding here neither depends on nor disturbs the caller's random state.
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)  # shuffling and subsampling, on CPU
        model = build_aggregator(name, in_dim, 1, **params).to(device)
        history = _train_loop(model, bags, fit_ids, y_fit, val_ids, y_val, pos_weight, config, generator, device, name)
    history.update(
        pos_weight=pos_weight, n_fit=len(fit_ids), n_val=len(val_ids), seconds=time.perf_counter() - started,
        aggregator_params=params,
    )
    return model, history


def _train_loop(
    model: Aggregator,
    bags: Mapping[str, np.ndarray],
    fit_ids: list[str],
    y_fit: np.ndarray,
    val_ids: list[str],
    y_val: np.ndarray,
    pos_weight: float,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    name: str,
) -> dict[str, Any]:
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32, device=device))

    def task_loss(outputs: Tensor, target: Tensor) -> Tensor:  # the binary task: one logit per bag
        return criterion(outputs[:, 0], target)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    targets = torch.as_tensor(y_fit, dtype=torch.float32, device=device)
    history: dict[str, Any] = {"train_loss": [], "val_loss": [], "val_auc": []}
    best_loss, best_auc, best_epoch = math.inf, math.nan, -1
    best_state: dict[str, Tensor] | None = None
    stopped_early = False

    for epoch in range(config.max_epochs):
        model.train()
        total = torch.zeros((), device=device)  # summed on device: no sync per step on a GPU
        for i in torch.randperm(len(fit_ids), generator=generator).tolist():
            batch, mask = _training_bag(bags[fit_ids[i]], config.max_instances, generator, device)
            loss = model.training_loss(batch, mask, targets[i : i + 1], task_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        train_loss = total.item() / len(fit_ids)
        val_loss, val_auc = validation_scores(bag_logits(model, bags, val_ids), y_val, pos_weight)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise WSIPipelineError(
                f"training diverged at epoch {epoch} (train loss {train_loss}, validation loss {val_loss})",
                where=f"aggregator {name}",
                fix="lower train.lr, or check the features for extreme values",
            )
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_auc"].append(val_auc)

        if _improves(val_loss, val_auc, best_loss, best_auc):
            best_loss, best_auc, best_epoch = val_loss, val_auc, epoch
            best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            stopped_early = True
            break

    assert best_state is not None  # the first finite epoch always improves on inf
    model.load_state_dict(best_state)
    model.eval()
    history.update(
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        best_val_auc=best_auc,
        epochs_run=len(history["val_loss"]),
        stopped_early=stopped_early,
    )
    return history
