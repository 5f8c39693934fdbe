"""The report's Protocol section: how the numbers were produced, in one place.

Folds, repeats, the inner split that chose each fold's epoch, nested model selection, what a
bag is, feature standardisation, tile filters, the optimiser's schedule and the sampling of
bags -- worded from the run's configuration, so a reader can judge (or redo) the validation
without opening the workflow file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsi_pipeline.config.loader import RunConfig

#: How the report states ``model.sampling``.
SAMPLING_FACTS = {
    "shuffle": "every fit bag once per epoch, shuffled",
    "balanced": "bags drawn with replacement, each class equally often",
}


def protocol_facts(config: RunConfig) -> dict[str, str]:
    """The protocol of a run, as ordered name -> sentence facts.

    Parameters
    ----------
    config
        The run's configuration.

    Returns
    -------
    dict
        ``folds``, ``repeats``, ``selection split``, ``model selection``, ``bags``,
        ``standardisation``, (``tile filter``,) ``optimiser``, ``sampling``.
    """
    # Imported here: context imports this module at its top; the wording of bags, grid and filters lives there.
    from wsi_pipeline.scoring.context import (
        BAGS_FACTS,
        model_selection_fact,
        tile_filter_fact,
    )

    workflow = config.workflow
    validation, model = workflow.validation, workflow.model
    schedule = (f"cosine decay to 0 at epoch {model.max_epochs}"
                + (f" after {model.warmup_epochs} warm-up epoch(s)" if model.warmup_epochs else "")
                if model.lr_schedule == "cosine" else "constant")
    facts = {
        "folds": f"{validation.n_folds}-fold cross-validation by patient (a patient's slides never straddle folds), "
        "stratified by the task's target" + (" and site" if validation.stratify_site else ""),
        "repeats": f"{validation.n_repeats} (each with its own shuffle; metrics are the mean over repeats)"
        if validation.n_repeats > 1 else "1 (a single cross-validation)",
        "selection split": f"{validation.val_fraction:.0%} of each fold's training patients held out as inner validation: "
        f"the epoch with the lowest validation loss is kept (early stopping, patience {model.patience}, "
        f"at most {model.max_epochs} epochs); the fold's test patients are never seen",
        "model selection": model_selection_fact(config).get("model selection", "none: every fold trains the configured settings"),
        "bags": BAGS_FACTS[model.bags] + (f"; at most {model.max_instances} instances sampled per bag in training"
                                          if model.max_instances else ""),
        "standardisation": "instance features standardised per feature with each fold's fit patients' mean and std"
        if model.standardise else "none (features as stored)",
        **tile_filter_fact(config),
        "optimiser": f"AdamW, lr {model.lr:g}, weight decay {model.weight_decay:g}, {schedule}"
        + (f", gradients accumulated over {model.grad_accumulation} batches" if model.grad_accumulation > 1 else ""),
        "sampling": SAMPLING_FACTS[model.sampling],
    }
    return facts
