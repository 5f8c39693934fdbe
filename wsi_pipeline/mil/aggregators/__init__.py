"""Bag aggregators: turn bags of instance features into per-bag outputs, all behind one interface.

The interface
-------------
Every aggregator is an :class:`~wsi_pipeline.mil.aggregators.base.Aggregator` built as
``Cls(in_dim, n_outputs, **settings)`` and called on a batch of padded bags::

    outputs, attention = model(bags, mask)

``bags`` is (B, N, D); ``mask`` is bool (B, N), True on real instances, and every bag has at
least one. ``outputs`` is (B, n_outputs): one logit for a binary task, one per class for a
multiclass task; the task, not the aggregator, gives them meaning. ``attention`` is (B, N):
non-negative, zero on padding and summing to one over each bag's real instances. Padding never
changes a result: a padded row's values cannot reach the outputs or the attention of the real
instances. Learned attention for attention models; uniform for mean-pooling baselines; for
max-pooling, one-hot on the instance that decided output 0; each module says what it reports.

Auxiliary training objectives
-----------------------------
Training never calls ``forward`` directly; it calls::

    loss = model.training_loss(bags, mask, targets, task_loss)

where ``task_loss(outputs (B, n_outputs), targets) -> scalar`` is the task's loss. The base
class returns ``task_loss(model(bags, mask)[0], targets)``. An aggregator whose paper trains it
with more than the task's loss overrides this method and combines, from one forward pass and
weighted as its reference implementation does: CLAM adds its instance clustering loss
(``0.7 * task + 0.3 * instance``; it needs class-index targets), DSMIL averages the task's loss
of its two streams. Validation, early stopping and prediction use ``forward`` (the outputs)
only, for every aggregator alike.

The aggregators (registry names; defaults and their sources in each module's docstring)
---------------------------------------------------------------------------------------
``abmil`` (gated) and ``abmil-plain`` (:mod:`.abmil`), ``clam-sb`` and ``clam-mb`` (:mod:`.clam`),
``transmil`` (:mod:`.transmil`), ``dsmil`` (:mod:`.dsmil`), ``meanpool`` (:mod:`.meanpool`),
``maxpool`` (:mod:`.maxpool`), ``linear-probe`` (:mod:`.linear_probe`). Names, settings and
their accepted values live in :mod:`wsi_pipeline.mil.registry`, which imports no torch, so
workflow files are validated without it.
"""

from wsi_pipeline.mil.aggregators.abmil import ABMIL, GatedABMIL
from wsi_pipeline.mil.aggregators.base import Aggregator, TaskLoss, pad_bags
from wsi_pipeline.mil.aggregators.clam import CLAMMB, CLAMSB, smooth_top1_svm
from wsi_pipeline.mil.aggregators.dsmil import DSMIL
from wsi_pipeline.mil.aggregators.linear_probe import LinearProbe
from wsi_pipeline.mil.aggregators.maxpool import MaxPoolMLP
from wsi_pipeline.mil.aggregators.meanpool import MeanPoolMLP
from wsi_pipeline.mil.aggregators.transmil import TransMIL

__all__ = [
    "ABMIL",
    "CLAMMB",
    "CLAMSB",
    "DSMIL",
    "Aggregator",
    "GatedABMIL",
    "LinearProbe",
    "MaxPoolMLP",
    "MeanPoolMLP",
    "TaskLoss",
    "TransMIL",
    "pad_bags",
    "smooth_top1_svm",
]
