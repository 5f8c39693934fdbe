"""Chain the stages of a run on a Dask cluster: cohort → tile → extract → train → score.

Per-slide and per-fold work runs as Dask tasks; stage outputs are checked before any work so a
re-run only does what is missing; ``run.json`` is written whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from distributed import Client
from rich.console import Console

from wsi_pipeline.cohort.table import Cohort, load_cohort
from wsi_pipeline.config.loader import RunConfig
from wsi_pipeline.config.manifest import JOBQUEUE_MODES
from wsi_pipeline.engine.cluster import ClusterLayout, cluster_layout, dask_client
from wsi_pipeline.engine.cohort_facts import cohort_summary
from wsi_pipeline.engine.freshness import is_fresh, mark_fresh, stage_key
from wsi_pipeline.engine.logs import gather_cluster_logs
from wsi_pipeline.engine.outcome import ItemOutcome
from wsi_pipeline.engine.preflight import check_paths_on_workers, worker_paths
from wsi_pipeline.engine.progress import run_tasks, submit_tasks, wait_for
from wsi_pipeline.engine.record import RunRecord
from wsi_pipeline.engine.tasks import (
    TILING_FAILED,
    extract_task,
    generate_synthetic_task,
    tile_task,
    train_task,
)
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.cohort_bags import (
    BagSource,
    StoreBagSource,
    available_bags,
    entry_slide_ids,
    slide_entries,
)
from wsi_pipeline.mil.folds import FOLDS_FILE, plan_run_folds, write_folds
from wsi_pipeline.mil.predictions import (
    PREDICTIONS_FILE,
    VALIDATION_PREDICTIONS_FILE,
    assemble_predictions,
    write_predictions,
)
from wsi_pipeline.mil.targets import encode_targets
from wsi_pipeline.mil.tasks.registry import workflow_task
from wsi_pipeline.mil.training_record import (
    TRAINING_FILE,
    remove_stale_checkpoints,
    write_training_table,
)
from wsi_pipeline.scoring.layout import PLOTS_DIR, TRAINING_CURVES_PLOT
from wsi_pipeline.scoring.predictions import load_predictions
from wsi_pipeline.sources.registry import get_source_factory
from wsi_pipeline.store.feature_store import FeatureStore
from wsi_pipeline.store.keys import file_sha256
from wsi_pipeline.tiling.slide_tiling import tiling_id, tiling_params

if TYPE_CHECKING:
    from wsi_pipeline.mil.external_bags import ExternalBags
    from wsi_pipeline.mil.tasks.base import Task
    from wsi_pipeline.sources.synthetic import SyntheticCohortPlan

STAGES = ("tile", "extract", "train", "score")
#: The stages of a run whose cohort brings its features (an instance table, .h5 files).
FEATURE_STAGES = ("train", "score")

#: Dask priority of extraction over tiling: a worker with a free encoder slot embeds a slide
#: already tiled before it tiles the next one, so the GPU starts with the first tiled slide.
EXTRACT_PRIORITY = 1

#: Exit statuses: everything worked; the run finished but some items failed. (Bad input is the
#: CLI's status 2: it raises before any work.)
EXIT_OK, EXIT_ITEMS_FAILED = 0, 1


@dataclass(frozen=True)
class RunResult:
    """What a run produced."""

    exit_code: int
    output_dir: Path
    record: RunRecord


def synthetic_cohort_dir(config: RunConfig) -> Path:
    """Where a synthetic cohort is generated: ``<output>/cohort``."""
    return config.output_dir / "cohort"


def synthetic_plan(config: RunConfig) -> SyntheticCohortPlan:
    """The manifest's synthetic cohort as a plan (cheap: nothing is rendered)."""
    from wsi_pipeline.sources.synthetic import plan_synthetic_cohort

    synthetic = config.manifest.cohort.synthetic
    assert synthetic is not None
    settings = synthetic.model_dump(exclude={"n_patients", "targets"})
    return plan_synthetic_cohort(synthetic.n_patients, config.seed, targets=synthetic.targets or config.workflow.task.type, **settings)


def prepare_cohort(config: RunConfig, client: Client, console: Console, record: RunRecord) -> Cohort:
    """Load the cohort table, generating a synthetic cohort first when the manifest asks for one."""
    synthetic = config.manifest.cohort.synthetic
    if synthetic is None:
        assert config.cohort_table is not None
        return load_cohort(config.cohort_table, config.slide_root, workflow_task(config.workflow), config.workflow.scoring.subgroups)
    from wsi_pipeline.sources.synthetic import write_cohort_table

    folder = synthetic_cohort_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    plan = synthetic_plan(config)
    items = [(entry.slide_id, (entry.slide_id, entry.spec, str(folder / entry.filename))) for entry in plan.slides]
    with record.stage("generate"):
        outcomes = run_tasks(client, "generate", generate_synthetic_task, items, console)
    record.add(outcomes)
    report_stage(console, record, "generate", "slide files exist")
    table = write_cohort_table(plan, folder)
    return load_cohort(table, folder, workflow_task(config.workflow), config.workflow.scoring.subgroups)


def external_bags(config: RunConfig) -> ExternalBags:
    """The cohort and bag source of a manifest whose cohort brings its features (instances, h5_dir)."""
    from wsi_pipeline.mil.external_bags import load_h5_cohort, load_instance_table

    task = workflow_task(config.workflow)
    if config.instances is not None:
        return load_instance_table(config.instances, task, config.workflow.scoring.subgroups)
    assert config.h5_dir is not None and config.cohort_table is not None
    return load_h5_cohort(config.h5_dir, config.cohort_table, task, config.workflow.scoring.subgroups)


def stages_for(config: RunConfig, stages: Collection[str]) -> tuple[str, ...]:
    """The stages that apply: all asked for, less tile and extract when the cohort brings its features.

    Raises
    ------
    WSIPipelineError
        When only tile or extract were asked for and the cohort brings its features.
    """
    if not config.features_given:
        return tuple(stages)
    kept = tuple(s for s in stages if s in FEATURE_STAGES)
    if not kept:
        source = "cohort.instances" if config.instances is not None else "cohort.h5_dir"
        raise WSIPipelineError(
            f"the cohort brings its features ({source}): there is nothing to {' or '.join(stages)}",
            where=str(config.manifest_path),
            fix="run `wsi-pipeline run` (it trains and scores), or `wsi-pipeline train` / `score`",
        )
    return kept


def report_stage(console: Console, record: RunRecord, stage: str, skip_reason: str) -> None:
    """Print one line per stage: what was done, skipped (and why), failed."""
    counts = record.count(stage)
    skipped = f", {counts['skipped']} skipped ({skip_reason})" if counts["skipped"] else ""
    failed = f", [red]{counts['failed']} failed[/red]" if counts["failed"] else ""
    blocked = f", {counts['blocked']} not run (an earlier stage failed for them)" if counts["blocked"] else ""
    retries = record.retries(stage)
    restarted = f", {retries} task restart(s) after a lost worker or an error" if retries else ""
    console.print(f"  {stage}: {counts['done']} done{skipped}{failed}{blocked}{restarted}")


def encoder_id_of(config: RunConfig) -> str:
    """The store key of the configured encoder (fails early on missing weights)."""
    from wsi_pipeline.features.encoder import encoder_id_for

    features = config.workflow.features
    return encoder_id_for(features.encoder, features.weights, allow_download=features.allow_download, stain=features.stain)


def slide_uids(cohort: Cohort, record: RunRecord, source_name: str) -> dict[str, str]:
    """Slide id → store entry name for every slide that has not failed this run.

    Uids the workers already computed this run are reused; only the others (a ``train`` run
    alone, say) are fingerprinted, by :func:`~wsi_pipeline.mil.cohort_bags.slide_entries`.
    """
    failed = {o.item for o in record.failures if o.stage in {"tile", "extract"}}
    known = {o.item: o.info["slide_uid"] for o in record.outcomes if "slide_uid" in o.info}
    return slide_entries(cohort, source_name, known=known, skip=failed)


def gather_bags(config: RunConfig, cohort: Cohort, record: RunRecord, encoder_id: str) -> BagSource:
    """The bags training uses (:func:`~wsi_pipeline.mil.cohort_bags.available_bags`); exclusions go to the record."""
    tid = tiling_id(config.workflow.tiling)
    uids = slide_uids(cohort, record, config.workflow.modality)
    bags = available_bags(FeatureStore(config.store_path), cohort, uids, encoder_id, tid)
    record.excluded_patients.update(bags.excluded)
    record.notes.extend(bags.notes)
    record.run_warnings.extend(bags.warnings)
    filters = config.workflow.model.tile_filters()
    if filters:
        shown = ", ".join(f"{column} {op} {threshold:g}" for column, op, threshold in filters)
        record.notes.append(f"training bags keep the tiles with {shown} (a column a tiling entry lacks filters nothing)")
    # The cohort's slide ids travel with the entries: slide-level predictions name slides by them.
    names = entry_slide_ids(cohort, uids, bags.patient_slides)
    return StoreBagSource(bags.patient_slides, str(config.store_path), encoder_id, tid, filters, slide_ids=names,
                          features_digest=bags.features_digest)


def train_stage(
    config: RunConfig,
    cohort: Cohort,
    client: Client,
    console: Console,
    record: RunRecord,
    layout: ClusterLayout | None = None,
    source: BagSource | None = None,
) -> pd.DataFrame | None:
    """Cross-validate every aggregator, one task per (repeat, fold, aggregator); writes ``predictions.csv`` and ``folds.csv``.

    Each task writes its fold's ``training/<fold>-<aggregator>/`` (``model.pt``, ``history.json``);
    the stage then writes ``training.csv`` and ``plots/training_curves.png`` (:func:`write_training_record`).

    The cohort's task (bound to its patients) is what every fold trains for; patients
    without features, or without a target the task may do without (a survival task's
    follow-up), are recorded as excluded. Training tasks hold a GPU slot when the cluster has
    GPUs and ``model.device`` is not 'cpu'. ``source``: where the bags are when the cohort
    brought its features (default: the feature store's entries for the cohort's slides).
    """
    workflow = config.workflow
    task = cohort.task
    assert task is not None
    record.excluded_patients.update(cohort.excluded)
    if source is None:
        source = gather_bags(config, cohort, record, encoder_id_of(config))
    encoder_id = source.features_id
    if record.excluded_patients:
        console.print(
            f"  train: [yellow]{len(record.excluded_patients)} patient(s) excluded[/yellow] (no features or no target): "
            f"{', '.join(record.excluded_patients)}"
        )
    all_targets = cohort.targets
    patients = [p for p in source.patients if p in all_targets]
    targets = {p: all_targets[p] for p in patients}
    predictions_path = config.output_dir / PREDICTIONS_FILE
    key = stage_key(
        {
            **source.fingerprint(),
            "targets": targets,
            "task": workflow.task_settings(),
            "model": workflow.model.model_dump(mode="json"),
            "validation": workflow.validation.model_dump(mode="json"),
            "sites": cohort.sites if workflow.validation.stratify_site else None,
            "seed": config.seed,
            # Slide-level rows name the slides: renaming one re-writes the table. Absent otherwise,
            # so runs of the other modes keep their key.
            **({"slide_names": source.slide_names()} if workflow.model.bags == "slide" else {}),
        }
    )
    validation_path = config.output_dir / VALIDATION_PREDICTIONS_FILE
    if is_fresh(config.output_dir, "train", key, [predictions_path, validation_path, config.output_dir / TRAINING_FILE]):
        record.add([ItemOutcome("train", "cross-validation", "skipped", reason="predictions up to date")])
        console.print("  train: skipped (predictions.csv is up to date for these features and settings)")
        return load_predictions(predictions_path, task=task)
    try:
        encoded = encode_targets(task, targets, patients)
        task.fit(encoded)  # can the task learn from these patients at all (two classes, an event)?
        strata = dict(zip(patients, task.stratify_labels(encoded).tolist()))
        plans = plan_run_folds(strata, workflow.validation, config.seed, cohort.sites)
    except WSIPipelineError as error:
        # Usually what failed slides left behind: the run's failures, not a bad manifest.
        reason = f"cannot cross-validate the {len(patients)} patient(s) with features: {error.format()}"
        record.add([ItemOutcome("train", "cross-validation", "failed", reason=reason)])
        report_stage(console, record, "train", "")
        return None
    write_folds(plans, config.output_dir / FOLDS_FILE)
    threads = config.manifest.cluster.worker_threads
    items = [
        (
            f"{plan.name}-{name}",
            (plan, name, source, {p: targets[p] for p in plan.patients}, task, workflow.model, config.seed, threads,
             workflow.validation, str(config.output_dir)),
        )
        for plan in plans
        for name in workflow.model.aggregators
    ]
    layout = layout or cluster_layout(client)
    resources = layout.training_resources(workflow.model.device)
    outcomes = run_tasks(client, "train", train_task, items, console, retries=0, resources=resources)
    record.add(outcomes)
    report_stage(console, record, "train", "")
    if any(o.status == "failed" for o in outcomes):
        return None
    # Popped: the rows go to predictions.csv, not a second time into run.json.
    rows = [row for o in outcomes for row in o.info.pop("predictions")]
    write_predictions(assemble_predictions(rows, cohort, encoder_id), predictions_path)
    validation_rows = [row for o in outcomes for row in o.info.pop("validation_predictions", [])]
    write_predictions(assemble_predictions(validation_rows, cohort, encoder_id), validation_path)
    write_training_record(config, outcomes)
    mark_fresh(config.output_dir, "train", key)
    # Score what was written, so a later run scoring the file sees exactly the same table.
    return load_predictions(predictions_path, task=task)


def write_training_record(config: RunConfig, outcomes: list[ItemOutcome]) -> None:
    """``training.csv`` (one row per repeat, fold and aggregator) and ``plots/training_curves.png`` from the training outcomes.

    The fold checkpoints they point to were written by the training tasks themselves; folders an
    earlier run left for folds or models this run does not have are removed.
    """
    from wsi_pipeline.scoring.context import report_context
    from wsi_pipeline.scoring.training_plot import plot_training_curves

    rows, curves = [], []
    for outcome in outcomes:
        row = outcome.info["training"]
        rows.append(row)
        # Popped: the curves are the figure's; run.json keeps the row only.
        curves.append({"model": row["model"], "repeat": row["repeat"], "fold": row["fold"], **outcome.info.pop("curves")})
    write_training_table(rows, config.output_dir / TRAINING_FILE)
    remove_stale_checkpoints(config.output_dir, [row["checkpoint"] for row in rows])
    plot_training_curves(curves, config.output_dir / PLOTS_DIR / TRAINING_CURVES_PLOT, caption=report_context(config).caption)


def score_stage(
    config: RunConfig, predictions: pd.DataFrame, console: Console, record: RunRecord, task: Task | None = None,
    cohort: Cohort | None = None,
) -> None:
    """Score out-of-fold predictions for the workflow's task: metrics.json, plots, report.

    ``task`` is the cohort's (bound: a multiclass task knows the cohort's classes); without
    it, the workflow's task is built here. ``cohort``: the report's Cohort section (given,
    scored, and what failed or was excluded, from ``record``) and synthetic-cohort banner.
    """
    from wsi_pipeline.scoring.context import report_context
    from wsi_pipeline.scoring.formatting import format_interval
    from wsi_pipeline.scoring.run_comparisons import COMPARISONS_KEY
    from wsi_pipeline.scoring.stage import score_predictions

    scoring = config.workflow.scoring
    # Hash what scoring reads, rounded, so a table read back from CSV matches the one written.
    content = predictions.sort_values(["model", "patient_id"]).round(8).to_csv(index=False)
    task = task or workflow_task(config.workflow)
    validation_path = config.output_dir / VALIDATION_PREDICTIONS_FILE
    tuned = scoring.threshold_method != "fixed"
    # Fixed on the validation predictions too: a tuned threshold, a survival task's risk cut-off.
    uses_validation = tuned or task.name == "survival"
    summary = cohort_summary(config, cohort, record) if cohort is not None else None
    key = stage_key(
        {"predictions": content, "scoring": scoring.model_dump(mode="json"), "task": config.workflow.task_settings(), "seed": config.seed,
         # A tuned threshold or a risk cut-off depends on the validation predictions too (absent: keys of
         # runs before it stay fresh).
         **({"validation": file_sha256(validation_path) if validation_path.is_file() else None} if uses_validation else {}),
         # What the report says about the cohort: another run's failures must not be left standing in it.
         **({"cohort": summary.as_dict()} if summary is not None else {})}
    )
    outputs = [config.output_dir / name for name in ("metrics.json", "report.md", "report.html")]
    if scoring.submission is not None:
        outputs.append(config.output_dir / scoring.submission.file)
    if is_fresh(config.output_dir, "score", key, outputs):
        record.add([ItemOutcome("score", "report", "skipped", reason="metrics up to date")])
        console.print("  score: skipped (metrics.json is up to date for these predictions)")
        return
    thresholds = None
    if tuned:
        from wsi_pipeline.scoring.run_threshold import validation_thresholds

        try:
            thresholds = validation_thresholds(
                validation_path, sorted(predictions["model"].unique()), scoring.threshold_method,
                label_column=task.target_columns[0], target_sensitivity=scoring.target_sensitivity,
            )
        except WSIPipelineError as error:
            record.add([ItemOutcome("score", "report", "failed", reason=error.format())])
            report_stage(console, record, "score", "")
            return
    cutoffs = None
    if task.name == "survival":
        from wsi_pipeline.scoring.run_threshold import validation_risk_cutoffs

        cutoffs = validation_risk_cutoffs(validation_path, sorted(predictions["model"].unique()),
                                          risk_column=task.prediction_columns[0])
    context = report_context(config)
    metrics = score_predictions(
        predictions,
        config.output_dir,
        n_resamples=scoring.bootstrap_resamples,
        seed=config.seed,
        task=task,
        title=context.title,
        source=str(config.output_dir / PREDICTIONS_FILE),
        caption=context.caption,
        context=context.facts,
        ci_level=scoring.ci_level,
        subgroups=scoring.subgroups,
        time_auc_horizons=scoring.time_auc_horizons,
        submission=scoring.submission,
        thresholds=thresholds,
        risk_cutoffs=cutoffs,
        compare=True,
        per_fold=True,
        cohort=summary,
        protocol=context.protocol,
    )
    record.add([ItemOutcome("score", "report", "done")])
    mark_fresh(config.output_dir, "score", key)
    headline = task.metric_names[0]
    label = task.metric_labels.get(headline, headline)
    for model, values in metrics.items():
        if model != COMPARISONS_KEY:
            console.print(f"  score: {model:<10} {label} {format_interval(values[headline])}")


def check_names(config: RunConfig) -> None:
    """Fail before any work on an unknown source or tissue method (with a suggestion)."""
    from wsi_pipeline.tiling.tissue import get_tissue_method

    get_source_factory(config.workflow.modality, where=f"{config.preset_path}: modality")
    get_tissue_method(config.workflow.tiling.tissue.method)
    tiling_id(config.workflow.tiling)  # reads a segmentation model file: a missing one fails here


def run_pipeline(
    config: RunConfig, stages: Collection[str] = STAGES, console: Console | None = None
) -> RunResult:
    """Run the chosen stages of a manifest.

    Parameters
    ----------
    config
        A validated run configuration.
    stages
        Subset of ``tile``, ``extract``, ``train``, ``score``, run in that order.
    console
        Where progress and summaries go (default: stderr).

    Returns
    -------
    RunResult
        ``exit_code`` is 0 when everything worked, 1 when some items failed (recorded in
        ``run.json``); user errors raise :class:`WSIPipelineError` before any work.
    """
    console = console or Console(stderr=True)
    output = config.output_dir
    output.mkdir(parents=True, exist_ok=True)
    record = RunRecord(config=config.resolved(), seed=config.seed)
    status = "crashed"
    run_started = time.perf_counter()
    try:
        stages = stages_for(config, stages)
        if not config.features_given:
            check_names(config)
        if not config.features_given and ("extract" in stages or "train" in stages):
            encoder_id_of(config)  # missing weights: fail before any work, not once per slide
        started = time.perf_counter()
        with dask_client(config.manifest.cluster, config.scheduler_address) as client:
            record.timings["cluster"] = round(time.perf_counter() - started, 3)
            if config.manifest.cluster.mode in JOBQUEUE_MODES:
                client.wait_for_workers(1)  # batch jobs may still be queued: nothing to check yet
            # The client creates the store; then every worker must see it where the client does.
            # Before any work: a path one worker cannot see would otherwise fail every one of its tasks.
            if not config.features_given:
                FeatureStore(config.store_path).prepare()
            check_paths_on_workers(client, worker_paths(config))
            try:
                run_stages(config, stages, client, console, record)
            finally:
                gather_cluster_logs(client, output / "logs")
        status = "failed items" if record.failures else "ok"
    finally:
        record.wall_seconds = round(time.perf_counter() - run_started, 3)
        record.write(output / "run.json", status)
    summarise(console, record, output)
    return RunResult(EXIT_ITEMS_FAILED if record.failures else EXIT_OK, output, record)


def run_stages(
    config: RunConfig,
    stages: Collection[str],
    client: Client,
    console: Console,
    record: RunRecord,
    layout: ClusterLayout | None = None,
) -> None:
    """Run the stages on a connected client, recording every outcome.

    Tile and extract run together: a slide's extraction task takes its tile task's future, so
    it starts as soon as that slide is tiled rather than after the whole cohort. Train and
    score follow once both are done.
    """
    workflow, output = config.workflow, config.output_dir
    console.print(f"[bold]wsi-pipeline[/bold] {workflow.name}: output {output}, scheduler {client.scheduler.address}")
    layout = layout or cluster_layout(client)
    record.cluster = layout.description
    console.print(f"  cluster: {layout.description}", highlight=False)
    if layout.dashboard:
        console.print(f"  dashboard: {layout.dashboard}", highlight=False)
    if layout.warning and "extract" in stages:
        record.run_warnings.append(layout.warning)
        console.print(f"  [yellow]warning[/yellow]: {layout.warning}", highlight=False)
    if config.features_given:
        run_feature_stages(config, stages, client, console, record, layout)
        return
    cohort = prepare_cohort(config, client, console, record)
    records = cohort.slide_records()
    console.print(f"  cohort: {cohort.patients.shape[0]} patients, {len(records)} slides")
    store = FeatureStore(config.store_path)
    tid = tiling_id(workflow.tiling)
    store.prepare(f"tiling/{tid}")
    threads = config.manifest.cluster.worker_threads
    source_name = workflow.modality
    failed_before = {o.item for o in record.failures}  # slides whose file could not be generated
    tiling = extraction = None
    if "tile" in stages:
        params = tiling_params(workflow.tiling)
        items = [
            (r.slide_id, (r, source_name, workflow.tiling, tid, params, str(config.store_path), str(output / "qc")))
            for r in records
        ]
        tiling = submit_tasks(client, "tile", tile_task, items)
    if "extract" in stages:
        encoder_id = encoder_id_of(config)
        store.prepare(f"features/{encoder_id}/{tid}")
        # Without a tile stage there is nothing to wait for: what is in the store is extracted.
        tiled = dict(zip(tiling.names, tiling.futures)) if tiling else {}
        items = [
            (
                r.slide_id,
                (r, source_name, tid, workflow.tiling.tile_px, workflow.features, encoder_id, str(config.store_path), threads,
                 tiled.get(r.slide_id)),
            )
            for r in records
            if r.slide_id not in failed_before
        ]
        extraction = submit_tasks(
            client, "extract", extract_task, items, resources=layout.encoder_resources, priority=EXTRACT_PRIORITY
        )
    wait_for([batch for batch in (tiling, extraction) if batch is not None], console)
    tile_outcomes: list[ItemOutcome] = []
    if tiling is not None:
        tile_outcomes = tiling.results()
        record.add_timing("tile", tiling.seconds)
        record.add(tile_outcomes)
        report_stage(console, record, "tile", "already in store")
        report_tiling_qc(console, tile_outcomes, output / "qc" / "tiling_qc.csv")
    if extraction is not None:
        record.add_timing("extract", extraction.seconds)
        record.add(blocked_by_tiling(tile_outcomes, extraction.results()))
        report_stage(console, record, "extract", "already in store")
    train_and_score(config, stages, cohort, client, console, record, layout)


def run_feature_stages(
    config: RunConfig, stages: Collection[str], client: Client, console: Console, record: RunRecord, layout: ClusterLayout
) -> None:
    """Train and score a cohort that brings its features (an instance table or .h5 files): no tile or extract."""
    loaded = external_bags(config)
    cohort = loaded.cohort
    record.notes.extend(loaded.notes)
    if config.workflow.model.tile_filters():
        record.notes.append("model.min_tissue / max_pen / min_blur ignored: the cohort's features have no tile QC columns")
    where = config.instances if config.instances is not None else config.h5_dir
    console.print(
        f"  cohort: {cohort.patients.shape[0]} patients, {len(cohort.slides)} bags; features from {where} "
        "(tile and extract not run)"
    )
    train_and_score(config, stages, cohort, client, console, record, layout, loaded.source)


def train_and_score(
    config: RunConfig,
    stages: Collection[str],
    cohort: Cohort,
    client: Client,
    console: Console,
    record: RunRecord,
    layout: ClusterLayout,
    source: BagSource | None = None,
) -> None:
    """The train and score stages (those asked for), on bags from ``source`` (default: the store)."""
    output = config.output_dir
    predictions = None
    if "train" in stages:
        with record.stage("train"):
            predictions = train_stage(config, cohort, client, console, record, layout, source)
    if "score" in stages:
        path = output / PREDICTIONS_FILE
        if predictions is None and "train" not in stages and path.is_file():
            predictions = load_predictions(path, task=cohort.task)
        if predictions is None:
            record.add([ItemOutcome("score", "report", "failed", reason="no predictions to score (training failed or did not run)")])
            return
        with record.stage("score"):
            score_stage(config, predictions, console, record, cohort.task, cohort)


def blocked_by_tiling(tile_outcomes: list[ItemOutcome], extract_outcomes: list[ItemOutcome]) -> list[ItemOutcome]:
    """Extraction outcomes where a failure that only repeats its slide's tiling failure is ``blocked``.

    An extraction task whose tiling failed returns ``blocked`` itself; but when the tile task was
    *lost* (its worker died twice), Dask fails the extraction without running it, with the same
    error. Either way the slide counts once, as a tile failure.
    """
    tile_failed = {o.item for o in tile_outcomes if o.status == "failed"}
    return [
        ItemOutcome("extract", o.item, "blocked", reason=TILING_FAILED) if o.status == "failed" and o.item in tile_failed else o
        for o in extract_outcomes
    ]


def report_tiling_qc(console: Console, outcomes: list[ItemOutcome], path: Path) -> None:
    """Write the cohort QC table and print tiles kept per slide, naming slides with none or flagged."""
    from wsi_pipeline.tiling.qc_table import qc_frame, tiles_summary, write_qc_table

    rows = []
    for outcome in outcomes:
        qc = outcome.info.get("qc") or {}
        rows.append(
            {
                "slide_id": outcome.item,
                "slide_uid": outcome.info.get("slide_uid"),
                # A slide tiled but left without tiles failed the stage, yet its QC numbers say
                # why (no tissue, all pen...): the table shows them and flags it, not "failed".
                "status": "done" if outcome.status == "failed" and qc else outcome.status,
                "reason": outcome.reason if outcome.status == "failed" else None,
                **qc,
            }
        )
    frame = qc_frame(rows)
    write_qc_table(path, frame)
    console.print(f"  tile: {tiles_summary(frame)}")
    flagged = frame[frame["flags"] != ""]
    if len(flagged):
        shown = ", ".join(f"{row.slide_id} ({row.flags})" for row in flagged.head(10).itertuples())
        more = f" and {len(flagged) - 10} more" if len(flagged) > 10 else ""
        console.print(f"  tile: [yellow]{len(flagged)} slide(s) flagged[/yellow]: {shown}{more}; see {path}")


def summarise(console: Console, record: RunRecord, output: Path) -> None:
    """Print timings and every failure with its reason.

    Stage times run from a stage's first task submitted to its last finished; tile and extract
    overlap, so the run's wall time is printed on its own, not as their sum.
    """
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in record.timings.items())
    overlap = "; tile and extract overlap" if {"tile", "extract"} <= set(record.timings) else ""
    wall = record.wall_seconds if record.wall_seconds is not None else sum(record.timings.values())
    console.print(f"[bold]done[/bold] in {wall:.1f}s ({timings}{overlap}); outputs in {output}")
    for warning in record.warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}", highlight=False)
    if record.failures:
        console.print(f"[red bold]{len(record.failures)} item(s) failed[/red bold] (details in run.json):")
        for failure in record.failures:
            console.print(f"  [red]{failure.stage} {failure.item}[/red]: {failure.reason}")
