"""``--dry-run``: validate a run completely and print its plan, computing nothing."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rich.console import Console
from rich.table import Table

from wsi_pipeline.cohort.table import load_cohort
from wsi_pipeline.config.loader import RunConfig
from wsi_pipeline.config.manifest import JOBQUEUE_MODES
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.features.registry import get_encoder_spec
from wsi_pipeline.features.weights import resolve_weights
from wsi_pipeline.mil.tasks.registry import workflow_task
from wsi_pipeline.sources.protocol import require_mpp
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.tiling.slide_tiling import tiling_id

#: The score stage's figures per task type (the plan's outputs line).
TASK_FIGURES = {"binary": "roc.png, pr.png, reliability.png", "multiclass": "roc.png, confusion_<model>.png", "regression": "scatter.png",
                "survival": "km_<model>.png"}

EXIT_OK, EXIT_PROBLEMS = 0, 2


def check_slides(records: list, source_name: str) -> list[tuple[str, str]]:
    """Open every slide and check its µm/px; return (slide id, problem) pairs."""
    problems = []
    for record in records:
        try:
            with open_source(source_name, record.path, record.mpp_override) as source:
                require_mpp(source)
        except WSIPipelineError as error:
            problems.append((record.slide_id, error.format()))
    return problems


def dry_run(config: RunConfig, stages: Collection[str], console: Console) -> int:
    """Validate files, slides, encoder weights and folds; print patients, slides, stages, outputs.

    Returns
    -------
    int
        0 when the run can go ahead, 2 when a problem was found (each one printed).
    """
    from wsi_pipeline.engine.runner import check_names, external_bags, stages_for

    workflow = config.workflow
    problems: list[tuple[str, str]] = []
    asked = tuple(stages)
    stages = stages_for(config, stages)
    try:
        if not config.features_given:
            check_names(config)
    except WSIPipelineError as error:
        problems.append(("workflow", error.format()))
    synthetic = config.manifest.cohort.synthetic
    task = workflow_task(workflow)
    features_line = None
    if config.features_given:
        loaded = external_bags(config)
        task, patients = loaded.cohort.task, loaded.cohort.patients
        patients = patients[patients["patient_id"].isin(loaded.source.patients)]
        n_slides = len(loaded.cohort.slides)
        where = config.instances if config.instances is not None else config.h5_dir
        cohort_line = str(where) if config.instances is not None else f"{config.cohort_table} (labels), {where} (.h5 files)"
        dropped = [s for s in asked if s not in stages]
        features_line = f"given: {where}" + (f" ({' and '.join(dropped)} not run)" if dropped else "")
    elif synthetic is not None:
        from wsi_pipeline.engine.runner import synthetic_plan

        plan = synthetic_plan(config)
        task = task.bind(plan.patients)
        patients = plan.patients
        n_slides = len(plan.slides)
        cohort_line = f"synthetic, generated into {config.output_dir / 'cohort'} (missing slides only)"
    else:
        cohort = load_cohort(config.cohort_table, config.slide_root, task, config.workflow.scoring.subgroups)
        task, patients = cohort.task, cohort.patients
        n_slides = len(cohort.slides)
        cohort_line = str(config.cohort_table)
        if not problems:  # with an unknown source every slide would fail for the same reason
            problems += check_slides(cohort.slide_records(), workflow.modality)

    spec = get_encoder_spec(workflow.features.encoder)
    if spec.needs_weights and not config.features_given and ({"extract", "train"} & set(stages)):
        try:
            resolve_weights(spec, workflow.features.weights, workflow.features.allow_download)
        except WSIPipelineError as error:
            problems.append(("encoder", error.format()))
    if "train" in stages:
        from wsi_pipeline.mil.folds import plan_run_folds

        try:
            encoded = task.targets(patients)
            task.fit(encoded)
            sites = dict(zip(patients["patient_id"], patients["site"].astype(str))) if "site" in patients.columns else None
            plan_run_folds(dict(zip(patients["patient_id"], task.stratify_labels(encoded).tolist())), workflow.validation,
                           config.seed, sites)
        except WSIPipelineError as error:
            problems.append(("validation", error.format()))

    table = Table(title=f"plan: {config.manifest_path.name} (workflow '{workflow.name}')", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")  # long paths wrap rather than being cut
    table.add_row("cohort", cohort_line)
    summary = task.summary(patients)
    table.add_row("patients", f"{len(patients)}{f' ({summary})' if summary else ''}")
    table.add_row("task", task.describe())
    table.add_row("bags" if features_line else "slides", str(n_slides))
    table.add_row("stages", " → ".join(stages))
    if features_line:
        table.add_row("features", features_line)
    else:
        _tiling_rows(table, workflow, spec)
    validation = workflow.validation
    repeats = f" x {validation.n_repeats} repeats" if validation.n_repeats > 1 else ""
    table.add_row("models", f"{', '.join(workflow.model.aggregators)}; {validation.n_folds}-fold patient CV{repeats}, inner validation {validation.val_fraction:.0%}")
    cluster = config.manifest.cluster
    gpus = "one per visible GPU" if cluster.gpus == "auto" else str(cluster.gpus)
    if config.scheduler_address:
        where = config.scheduler_address
    elif cluster.mode in JOBQUEUE_MODES:
        from wsi_pipeline.engine.cluster import job_script

        where = f"{cluster.mode} jobs, each running:\n{job_script(cluster)}"
    else:
        where = (
            f"local: {cluster.n_workers} CPU workers × {cluster.threads_per_worker} threads, GPU workers: {gpus} "
            f"(× {cluster.threads_per_gpu_worker} threads)"
        )
    table.add_row("cluster", where)
    if not features_line:
        table.add_row("store", str(config.store_path))
    submission = config.workflow.scoring.submission
    submitted = f", {submission.file} ({submission.model}'s predictions)" if submission is not None else ""
    table.add_row("outputs", f"{config.output_dir}/: predictions.csv, metrics.json, run.json, report.md, report.html{submitted}, "
                  f"plots/ ({TASK_FIGURES[config.workflow.task.type]}), qc/")
    console.print(table)
    if problems:
        console.print(f"[red bold]{len(problems)} problem(s):[/red bold]")
        for item, message in problems:
            console.print(f"  [red]{item}[/red]: {message}", markup=True, highlight=False)
        return EXIT_PROBLEMS
    console.print("[green]dry run: everything checks out[/green]")
    return EXIT_OK


def _tiling_rows(table: Table, workflow: Any, spec: Any) -> None:
    """The plan's tiling and encoder rows (a cohort of slides)."""
    table.add_row("tiling", f"{workflow.tiling.mpp:g} µm/px, {workflow.tiling.tile_px} px, tissue '{workflow.tiling.tissue.method}', min tissue {workflow.tiling.qc.min_tissue:.0%} (id {tiling_id(workflow.tiling)})")
    table.add_row("encoder", f"{spec.name}{' (DEMO: random weights, not a pathology model)' if spec.is_demo else ''}, dim {spec.dim}")
