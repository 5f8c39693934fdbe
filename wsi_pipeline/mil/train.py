"""Training one aggregator on one fold for a task, with early stopping on the inner validation set.

Model selection (the epoch whose weights are kept) looks only at the validation patients
given here, which ``mil.splits`` carves out of the fold's training patients. Test patients
never enter this module: predictions for them are made afterwards with :func:`predict_bags`.

What is predicted is the task's (:mod:`wsi_pipeline.mil.tasks`): the number of outputs, the
loss (fitted on the fit patients only: class weights, target scale, time bins), the score
that breaks validation-loss ties, and the prediction columns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.aggregators.base import Aggregator, pad_bags
from wsi_pipeline.mil.bag_cache import prefetched
from wsi_pipeline.mil.bags import Scratch, as_float32, bag_tensor, check_bags
from wsi_pipeline.mil.registry import (
    available_aggregators,
    build_aggregator,
    resolve_params,
)
from wsi_pipeline.mil.splits import assert_disjoint
from wsi_pipeline.mil.targets import encode_targets
from wsi_pipeline.mil.tasks.base import Task

if TYPE_CHECKING:
    from wsi_pipeline.config.workflow import ModelConfig

# Two validation losses closer than this count as a tie, broken by the task's model selection
# score (a binary task's AUC). Losses on a few dozen patients wobble at this scale from noise alone.
LOSS_TIE_TOLERANCE = 1e-4

T = TypeVar("T")

#: Bags per step when ``model.batch_bags`` is unset and the task's loss compares bags with
#: each other (Cox): enough for a risk set with several events in a cohort of ~20% events.
COMPARATIVE_LOSS_BATCH = 16


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
    batch_bags
        Bags per optimiser step: their outputs are stacked (bags padded to the longest, with a
        mask) and the task's loss is taken once over them. ``None``: one bag per step for a
        task whose loss is a mean over bags, :data:`COMPARATIVE_LOSS_BATCH` for one whose
        loss compares bags (Cox), see :meth:`bags_per_step`.
    standardise
        :func:`~wsi_pipeline.mil.cv.train_fold` standardises each fold's bags with the mean
        and std of its fit patients' instances (:mod:`~wsi_pipeline.mil.standardise`). False
        here (a config built by hand trains on the features as given); a workflow's ``model``
        section turns it on by default.
    bags
        ``'patient-early'`` (a patient's slides concatenated into one bag), ``'patient-late'``
        (each slide a bag; the patient's prediction the mean over their slides) or ``'slide'``
        (each slide a bag, predicted and scored on its own), :mod:`~wsi_pipeline.mil.fusion`.
    lr_schedule, warmup_epochs
        ``'constant'``, or ``'cosine'``: the learning rate rises linearly from 0 over
        ``warmup_epochs`` then follows a half cosine to 0 at ``max_epochs``, updated every
        optimiser step (:func:`lr_factor`).
    sampling
        ``'shuffle'``: every fit bag once per epoch, in a shuffled order; ``'balanced'``: as
        many draws per epoch, with replacement, each stratum of the task
        (``task.stratify_labels``: a class) drawn equally often (:func:`epoch_order`).
    grad_accumulation
        Optimiser steps take the gradients of this many consecutive batches (the loss of each
        divided by it): a larger effective batch without its memory.
    amp
        On a CUDA device, forward passes run under bfloat16 autocast (no gradient scaling
        needed, unlike float16); ignored on the CPU, where bfloat16 matmuls are slower.
    """

    max_epochs: int
    patience: int
    lr: float
    weight_decay: float
    max_instances: int | None
    aggregator_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_bags: int | None = None
    standardise: bool = False
    bags: str = "patient-early"
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    sampling: str = "shuffle"
    grad_accumulation: int = 1
    amp: bool = True

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
            batch_bags=model.batch_bags,
            standardise=model.standardise,
            bags=model.bags,
            lr_schedule=model.lr_schedule,
            warmup_epochs=model.warmup_epochs,
            sampling=model.sampling,
            grad_accumulation=model.grad_accumulation,
            amp=model.amp,
        )

    def params_for(self, name: str) -> dict[str, Any]:
        """The settings aggregator ``name`` is built with, beyond its defaults."""
        return dict(self.aggregator_params.get(name, {}))

    def bags_per_step(self, task: Task) -> int:
        """``batch_bags``, or its default for the task: 1, or :data:`COMPARATIVE_LOSS_BATCH` when ``task.per_sample_loss`` is False."""
        if self.batch_bags is not None:
            return self.batch_bags
        return 1 if task.per_sample_loss else COMPARATIVE_LOSS_BATCH


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
    tensor = bag.to(device=device, dtype=torch.float32) if isinstance(bag, Tensor) else bag_tensor(bag, device)
    return tensor.unsqueeze(0), torch.ones((1, tensor.shape[0]), dtype=torch.bool, device=tensor.device)


def bag_outputs(model: Aggregator, bags: Mapping[str, np.ndarray], ids: Sequence[str], *, amp: bool = False) -> np.ndarray:
    """Return the model's outputs for each bag, whole bags, one at a time, in eval mode.

    Parameters
    ----------
    model
        An aggregator.
    bags
        Patient id -> instance features (N, D); a streamed mapping is read one bag ahead.
    ids
        The patients to score, in the order of the result.
    amp
        bfloat16 autocast when the model is on a CUDA device. Off by default: predictions are
        made once, in float32, so a checkpoint reloaded later gives them again exactly; only
        the per-epoch validation pass of training follows ``model.amp``, for speed.

    Returns
    -------
    np.ndarray
        float64 outputs, shape (len(ids), model.n_outputs).
    """
    return _timed_outputs(model, bags, ids, amp)[0]


def _timed_outputs(model: Aggregator, bags: Mapping[str, np.ndarray], ids: Sequence[str], amp: bool) -> tuple[np.ndarray, float]:
    """:func:`bag_outputs`, and the seconds spent waiting for and preparing bags (not computing)."""
    device = _model_device(model)
    rows, data_seconds = [], 0.0
    reader = prefetched(getattr(bags, "raw", bags), [[pid] for pid in ids])
    scratch = Scratch()

    def prepare(index: int) -> tuple[Tensor, Tensor]:
        bag = np.asarray(next(reader)[0])
        return _one_bag(_prepared(bags, bag, scratch.array(bag.shape, slot=index % 2)), device)

    batches = ahead(prepare, len(ids))
    with _eval_mode(model), _autocast(device, amp):
        for _ in ids:
            waited = time.perf_counter()
            batch = next(batches)
            data_seconds += time.perf_counter() - waited
            rows.append(model(*batch)[0][0].double().cpu().numpy())
    batches.close()
    return np.asarray(rows, dtype=np.float64).reshape(len(ids), model.n_outputs), data_seconds


def ahead(produce: Callable[[int], T], n: int) -> Iterator[T]:
    """Yield ``produce(0), ..., produce(n - 1)`` in order, each next one made on a thread while the caller uses the current.

    Preparing a batch (reading, subsampling, converting, standardising, copying to the
    device) then overlaps the model's work on the previous one, as a data loader's workers
    do. One thread, and calls in order, so whatever ``produce`` draws from a random generator
    is drawn in the same order as without it. ``produce(i + 1)`` runs while result ``i`` is in
    use: it must not write into result ``i``'s memory (alternate buffers by ``i % 2``).
    """
    if n == 0:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="bag-prepare") as pool:
        pending = pool.submit(produce, 0)
        for index in range(n):
            current = pending.result()
            if index + 1 < n:
                pending = pool.submit(produce, index + 1)
            yield current


def predict_bags(model: Aggregator, bags: Mapping[str, np.ndarray], ids: Sequence[str], task: Task) -> dict[str, np.ndarray]:
    """Return the task's prediction columns for each bag (whole bags, eval mode).

    Parameters
    ----------
    model
        A trained aggregator.
    bags
        Patient id -> instance features (N, D); float16 is fine.
    ids
        The patients to score, in the order of the rows.
    task
        The fitted task the model was trained for (``task.predictions`` of the outputs, e.g.
        a binary task's ``score``, the probability of label 1).

    Returns
    -------
    dict
        Column name -> values, one per id (:attr:`~wsi_pipeline.mil.tasks.base.Task.prediction_columns`).
    """
    return task.predictions(bag_outputs(model, bags, ids))


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


def validation_scores(task: Task, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Return (loss, selection score) of outputs against encoded targets: what model selection compares.

    The loss is the fitted task's training objective on all the validation bags at once
    (float64); the score is :meth:`~wsi_pipeline.mil.tasks.base.Task.model_selection_score`
    (higher is better; NaN when undefined, e.g. an AUC with one class).
    """
    loss = task.loss(torch.as_tensor(outputs, dtype=torch.float64), targets).item()
    return loss, task.model_selection_score(outputs, targets)


def _improves(loss: float, score: float, best_loss: float, best_score: float) -> bool:
    """Lower validation loss wins; a loss within the tie tolerance wins on a higher selection score."""
    if loss < best_loss - LOSS_TIE_TOLERANCE:
        return True
    if abs(loss - best_loss) <= LOSS_TIE_TOLERANCE:
        return _score_rank(score) > _score_rank(best_score)
    return False


def _score_rank(score: float) -> float:
    """An undefined (NaN) score never wins a tie."""
    return -math.inf if math.isnan(score) else score


def subsample_rows(n: int, max_instances: int | None, generator: torch.Generator) -> np.ndarray | None:
    """Sorted indices of a random subset of at most ``max_instances`` of ``n`` rows; None keeps all.

    The kept rows stay in the bag's order: it reads memory in order, and the order matters to
    an aggregator with positional encoding (TransMIL).
    """
    if max_instances is None or n <= max_instances:
        return None
    return np.sort(torch.randperm(n, generator=generator)[:max_instances].numpy())


def _training_rows(
    bags: Mapping[str, np.ndarray], raw: np.ndarray, max_instances: int | None, generator: torch.Generator, out: Scratch, slot: int
) -> np.ndarray:
    """One training bag as float32 rows: the raw bag subsampled first, then converted (and standardised).

    Subsampling before standardising means a step touches ``max_instances`` rows, not the
    whole bag: a 10,000-tile bag would otherwise be converted and standardised in full for
    512 rows. The rows land in slot ``slot`` of ``out`` (the step's bags are used before the
    next step overwrites them).
    """
    keep = subsample_rows(np.shape(raw)[0], max_instances, generator)
    rows = np.asarray(raw) if keep is None else np.asarray(raw)[keep]
    return _prepared(bags, rows, out.array(rows.shape, slot))


def _prepared(bags: Mapping[str, np.ndarray], rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``rows`` as float32 in ``out``, through the view's standardisation when ``bags`` has one."""
    apply = getattr(bags, "apply", None)
    return apply(rows, out) if apply is not None else as_float32(rows, out)


def _batch(parts: Sequence[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    """Bags as one padded float32 batch (B, N, D) with its mask (B, N)."""
    if len(parts) == 1:
        return _one_bag(parts[0], device)
    return pad_bags(parts, device=device)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The learning rate's multiplier at optimiser step ``step`` (0-based).

    ``'constant'``: 1. ``'cosine'``: ``(step + 1) / warmup_steps`` during warm-up, then
    ``0.5 (1 + cos(pi t))`` with ``t`` going from 0 to 1 over the remaining steps.
    """
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def epoch_order(strata: np.ndarray, sampling: str, generator: torch.Generator) -> list[int]:
    """The fit bags of one epoch, as indices in the order they are used.

    ``'shuffle'``: a permutation. ``'balanced'``: ``len(strata)`` draws with replacement,
    each bag drawn with probability ``1 / (n_strata * count of its stratum)``, so every
    stratum (class) is drawn equally often on average.
    """
    n = len(strata)
    if sampling == "shuffle":
        return torch.randperm(n, generator=generator).tolist()
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()


def fit_aggregator(
    name: str,
    bags: Mapping[str, np.ndarray],
    targets: Mapping[str, Any],
    fit_ids: Sequence[str],
    val_ids: Sequence[str],
    config: TrainConfig,
    seed: int,
    *,
    task: Task | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Aggregator, dict[str, Any]]:
    """Train an aggregator for a task on ``fit_ids``, selecting the epoch on ``val_ids``.

    The task is fitted on the fit patients' targets (``task.fit``: class weights, target
    scale, time bins), the aggregator gets ``task.n_outputs`` outputs, and each step minimises
    its ``training_loss`` with the task's loss: that loss alone, or with CLAM's instance
    clustering loss or DSMIL's second stream. A step takes ``config.bags_per_step(task)``
    bags (1 by default: bags differ in size; several, padded and masked, for a loss such as
    Cox's that compares bags), in a shuffled order; AdamW. After every epoch the whole
    validation bags are scored: the task's loss on their outputs (for every aggregator alike)
    and its model selection score; the weights of the best epoch (lowest validation loss, ties
    within ``LOSS_TIE_TOLERANCE`` broken by the higher score) are restored before returning.
    Training stops after ``config.patience`` epochs without improvement.

    Parameters
    ----------
    name
        A registered aggregator name.
    bags
        Patient id -> instance features (N, D), any float dtype (cast to float32 per step,
        so float16 bags from the store are not duplicated in memory).
    targets
        Patient id -> raw target values (a label; a number; a ``(time, event)`` pair), as
        :func:`~wsi_pipeline.mil.targets.patient_targets` gives them; checked and encoded by
        the task.
    fit_ids, val_ids
        Disjoint patient groups: trained on, and used for early stopping/model selection.
        Never pass test patients here.
    config
        Training settings; the aggregator is built with ``config.params_for(name)``.
    seed
        Seeds initialisation, dropout, shuffling and instance subsampling. Torch's global
        RNG is seeded inside a fork, so the caller's RNG state is left as it was.
    task
        The task, bound to the cohort (a multiclass task knows its classes) but not fitted;
        default: a binary task on 0/1 labels.
    device
        Where to train: ``"cpu"`` by default, ``"auto"``, ``"cuda"``, ``"cuda:N"`` (see
        :func:`resolve_device`). Bags move to it one step at a time; scores come back as numpy.

    Returns
    -------
    model
        The aggregator with the best epoch's weights, in eval mode.
    history
        ``train_loss`` (the training objective, mean over steps), ``val_loss`` (the task's
        loss on the outputs), ``val_score`` (the task's selection score, named by
        ``selection_metric``): one value per epoch run; ``best_epoch``: 0-based index into
        those lists of the restored weights; also ``best_val_loss``, ``best_val_score``,
        ``epochs_run``, ``stopped_early``, ``task`` (the fitted task, which predictions are
        made with), ``fitted_state`` (what the task learned from the fit patients, JSON-able),
        ``bags_per_step``, ``n_fit``, ``n_val``, ``seconds`` and ``aggregator_params``
        (every setting the model was built with).

    Raises
    ------
    WSIPipelineError
        For missing/bad bags or targets, empty groups, fit patients the task cannot train on
        (one class, no event), invalid aggregator settings, or a diverged (non-finite) loss.
    """
    started = time.perf_counter()
    task = default_task() if task is None else task
    fit_ids, val_ids = list(fit_ids), list(val_ids)
    if not fit_ids or not val_ids:
        raise WSIPipelineError(
            f"training needs fit and validation patients; got {len(fit_ids)} fit and {len(val_ids)} validation",
            where=f"aggregator {name}",
            fix="use more patients or a val_fraction that leaves both groups non-empty",
        )
    assert_disjoint(fit_ids, val_ids, "fit vs val")
    in_dim = check_bags(bags, fit_ids + val_ids)
    y_fit = encode_targets(task, targets, fit_ids)
    y_val = encode_targets(task, targets, val_ids)
    fitted = task.fit(y_fit)
    params = resolve_params(name, config.params_for(name))
    device = resolve_device(device)
    per_step = config.bags_per_step(fitted)
    # Fork the RNG so seeding here neither depends on nor disturbs the caller's random state.
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)  # shuffling and subsampling, on CPU
        model = build_aggregator(name, in_dim, fitted.n_outputs, **params).to(device)
        history = _train_loop(model, bags, fit_ids, y_fit, val_ids, y_val, fitted, per_step, config, generator, device, name)
    history.update(
        task=fitted, fitted_state=fitted.fitted_state, selection_metric=fitted.selection_metric, bags_per_step=per_step,
        n_fit=len(fit_ids), n_val=len(val_ids), seconds=time.perf_counter() - started, aggregator_params=params,
    )
    return model, history


def default_task() -> Task:
    """A binary task on 0/1 labels: what the training functions train for when given no task."""
    from wsi_pipeline.mil.tasks.binary import BinaryTask

    return BinaryTask()


def _steps(order: Sequence[int], per_step: int) -> list[list[int]]:
    """An epoch's order of fit bags cut into steps of at most ``per_step`` bags, sizes as even as possible.

    One bag per step keeps the order. Several are cut evenly (10 bags at 4 per step: 4, 3, 3)
    so no step is left with a single bag, which a comparative loss cannot use.
    """
    order = list(order)
    if per_step == 1:
        return [[i] for i in order]
    return [part.tolist() for part in np.array_split(np.asarray(order), math.ceil(len(order) / per_step))]


def _autocast(device: torch.device, amp: bool) -> AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA when ``amp``; nothing on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _train_loop(
    model: Aggregator,
    bags: Mapping[str, np.ndarray],
    fit_ids: list[str],
    y_fit: np.ndarray,
    val_ids: list[str],
    y_val: np.ndarray,
    task: Task,
    per_step: int,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    name: str,
) -> dict[str, Any]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    targets = torch.as_tensor(y_fit, dtype=torch.float32, device=device)
    strata = task.stratify_labels(y_fit)
    accumulate = config.grad_accumulation
    optimiser_steps = math.ceil(math.ceil(len(fit_ids) / per_step) / accumulate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, optimiser_steps * config.max_epochs, optimiser_steps * config.warmup_epochs, config.lr_schedule),
    )
    # Raw bags are read (and prefetched, when streamed) before the view's standardisation.
    raw = getattr(bags, "raw", bags)
    scratch = Scratch()  # float32 buffers reused step after step (fresh 40 MB arrays cost page faults)
    history: dict[str, Any] = {"train_loss": [], "val_loss": [], "val_score": [], "lr": [], "epoch_seconds": [], "data_seconds": []}
    best_loss, best_score, best_epoch = math.inf, math.nan, -1
    best_state: dict[str, Tensor] | None = None
    stopped_early = False

    for epoch in range(config.max_epochs):
        epoch_started = time.perf_counter()
        data_seconds = 0.0
        model.train()
        total = torch.zeros((), device=device)  # summed on device: no sync per step on a GPU
        steps = _steps(epoch_order(strata, config.sampling, generator), per_step)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        reader = prefetched(raw, [[fit_ids[i] for i in step] for step in steps])

        def prepare(index: int, reader: Iterator[list[np.ndarray]] = reader) -> tuple[Tensor, Tensor]:
            # Buffers alternate by step parity: step index + 1 is prepared while step index computes.
            parity = (index % 2) * (per_step + 1)
            parts = [
                _training_rows(bags, bag, config.max_instances, generator, scratch, parity + slot)
                for slot, bag in enumerate(next(reader))
            ]
            return _batch(parts, device)

        batches = ahead(prepare, len(steps))
        optimizer.zero_grad(set_to_none=True)
        for index, step in enumerate(steps):
            waited = time.perf_counter()
            batch, mask = next(batches)
            data_seconds += time.perf_counter() - waited
            with _autocast(device, config.amp):
                loss = model.training_loss(batch, mask, targets[step], task.loss)
            (loss / accumulate).backward()
            if (index + 1) % accumulate == 0 or index + 1 == len(steps):
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach().float()
        batches.close()  # ends the preparing thread now rather than when the generator is collected
        train_loss = total.item() / len(steps)
        outputs, reading = _timed_outputs(model, bags, val_ids, config.amp)
        val_loss, val_score = validation_scores(task, outputs, y_val)
        data_seconds += reading
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise WSIPipelineError(
                f"training diverged at epoch {epoch} (train loss {train_loss}, validation loss {val_loss})",
                where=f"aggregator {name}",
                fix="lower model.lr, or check the features for extreme values",
            )
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_score"].append(val_score)
        history["epoch_seconds"].append(time.perf_counter() - epoch_started)
        history["data_seconds"].append(data_seconds)

        if _improves(val_loss, val_score, best_loss, best_score):
            best_loss, best_score, best_epoch = val_loss, val_score, epoch
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
        best_val_score=best_score,
        epochs_run=len(history["val_loss"]),
        stopped_early=stopped_early,
    )
    return history
