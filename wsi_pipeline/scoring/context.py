"""What a run's report says about the run: its title, the caption under every plot, the facts listed.

Worded here, once, from the run's configuration, so the engine only passes it on and a
notebook scoring a run's predictions writes the same report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.config.loader import RunConfig
from wsi_pipeline.scoring.protocol import protocol_facts


@dataclass(frozen=True)
class ReportContext:
    """The run-specific text of a report.

    Attributes
    ----------
    title
        The report's title.
    caption
        The line under every plot: the workflow and the encoder (flagged when a demo).
    facts
        Facts about the run listed in the report (workflow, manifest, encoder, tiling,
        validation, seed), in that order.
    protocol
        The validation protocol, the report's Protocol section
        (:func:`~wsi_pipeline.scoring.protocol.protocol_facts`).
    """

    title: str
    caption: str
    facts: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, str] = field(default_factory=dict)


#: How the report states ``model.bags``: what a bag is, and what is predicted and scored.
BAGS_FACTS = {
    "patient-early": "patient, early fusion (a patient's slides form one bag)",
    "patient-late": "patient, late fusion (each slide a bag; a patient's prediction is the mean over their slides)",
    "slide": "slide-level (each slide a bag with its patient's target, predicted and scored per slide; "
    "folds and bootstrap by patient)",
}


def encoder_label(encoder: str) -> str:
    """An encoder's name as reports show it; a demo encoder is said to be one.

    Parameters
    ----------
    encoder
        A registered encoder name (the workflow's ``features.encoder``).

    Returns
    -------
    str
        E.g. ``"uni"``, or ``"demo-resnet18-random — DEMO encoder, not a pathology model"``.
    """
    # Imported here: the registry imports torch, which scoring a predictions file never needs.
    from wsi_pipeline.features.registry import get_encoder_spec

    spec = get_encoder_spec(encoder)
    return f"{spec.name} — DEMO encoder, not a pathology model" if spec.is_demo else spec.name


def report_context(config: RunConfig) -> ReportContext:
    """The report's title, caption and facts for a run.

    Parameters
    ----------
    config
        The run's configuration.

    Returns
    -------
    ReportContext
        Text for :func:`~wsi_pipeline.scoring.stage.score_predictions` (``title``,
        ``caption``, ``context``).
    """
    workflow = config.workflow
    validation = workflow.validation
    if config.features_given:
        where = config.instances if config.instances is not None else config.h5_dir
        kind = "instance table" if config.instances is not None else ".h5 feature files"
        label = f"features given ({kind} {Path(str(where)).name})"
        features = {"features": f"{kind} {where} (not tiled or embedded by this run)"}
    else:
        label = encoder_label(workflow.features.encoder)
        features = {
            "encoder": label,
            "tiling": f"{workflow.tiling.mpp:g} µm/px, {workflow.tiling.tile_px} px tiles",
        }
    return ReportContext(
        title=f"wsi-pipeline: {workflow.name}",
        caption=f"{workflow.name}; {label if config.features_given else f'encoder {label}'}",
        facts={
            "workflow": workflow.name,
            "manifest": str(config.manifest_path),
            **features,
            "validation": f"{validation.n_folds}-fold patient-level CV"
            + (f", repeated {validation.n_repeats} times" if validation.n_repeats > 1 else "")
            + (", stratified by site" if validation.stratify_site else "")
            + f", inner validation {validation.val_fraction:.0%} for early stopping",
            "bags": BAGS_FACTS[workflow.model.bags],
            **tile_filter_fact(config),
            "instance features": "standardised per feature with each fold's fit patients' mean and std"
            if workflow.model.standardise
            else "as stored (not standardised)",
            **model_selection_fact(config),
            "seed": config.seed,
        },
        protocol=protocol_facts(config),
    )


def tile_filter_fact(config: RunConfig) -> dict[str, str]:
    """The report's line on the tile QC filters training applied (none when there are none)."""
    filters = config.workflow.model.tile_filters()
    if not filters or config.features_given:
        return {}
    return {"tile filter": ", ".join(f"{column} {op} {threshold:g}" for column, op, threshold in filters)}


def model_selection_fact(config: RunConfig) -> dict[str, str]:
    """The report's line on nested CV over ``model.grid`` (none without a grid)."""
    model, validation = config.workflow.model, config.workflow.validation
    if not model.grid:
        return {}
    shown = {key: ", ".join(format(v, "g") if isinstance(v, float) else str(v) for v in values) for key, values in model.grid.items()}
    grid = "; ".join(f"{key} {values}" for key, values in shown.items())
    return {
        "model selection": f"nested CV over {len(model.grid_points())} combinations ({grid}): each outer fold trains the "
        f"one with the lowest mean loss over {validation.inner_folds} inner folds of its training patients "
        "(choices and inner scores in training.csv)"
    }
