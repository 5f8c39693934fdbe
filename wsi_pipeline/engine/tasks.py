"""The functions Dask runs on workers: one slide (generate, tile, extract) or one fold (train).

Each is idempotent: it checks the store (or output file) first and reports ``skipped`` when
the work is already complete; it writes atomically and marks completion last; it never raises
(see :func:`guarded`), so one bad slide cannot stop a run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_pipeline.cohort.table import SlideRecord
from wsi_pipeline.config.workflow import (
    FeaturesConfig,
    ModelConfig,
    TilingConfig,
    ValidationConfig,
)
from wsi_pipeline.engine.outcome import ItemOutcome, guarded
from wsi_pipeline.mil.cohort_bags import BagSource
from wsi_pipeline.mil.splits import FoldPlan
from wsi_pipeline.sources.protocol import (
    ReadOptions,
    TileSource,
    mpp_disagreement,
    require_mpp,
)
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.store.feature_store import (
    FeatureStore,
    features_key,
    slide_entry,
    tiling_key,
)
from wsi_pipeline.tiling.qc_table import QC_TABLE_COLUMNS
from wsi_pipeline.tiling.slide_tiling import SlideTiling, tile_slide

if TYPE_CHECKING:
    from wsi_pipeline.mil.tasks.base import Task

#: Tiling attributes repeated on every feature entry, so an entry explains itself alone.
TILING_PROVENANCE = (
    "slide_mpp", "mpp_source", "level0_size", "read_level", "target_mpp", "effective_mpp", "tile_px", "tile_um", "tile_size_level0",
)


def worker_threads(default: int) -> int:
    """Threads of the Dask worker running this task; ``default`` outside a worker (a notebook).

    Workers of one cluster differ (a GPU worker has its own thread count, an external
    scheduler's workers their own), so a task asks the worker it landed on.
    """
    from distributed import get_worker

    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not running on a worker
        return default


def set_torch_threads(threads: int) -> None:
    """Give torch the worker's thread budget (its default would claim every core per worker)."""
    import torch

    torch.set_num_threads(max(1, threads))


def open_slide(record: SlideRecord, source_name: str, read_options: ReadOptions | None = None) -> tuple[TileSource, str]:
    """Open a slide through the named source and return it with its store entry name.

    The entry name joins the content fingerprint with the level-0 µm/px in use, so the
    same file tiled under another µm/px override never reuses these coordinates or features.
    """
    source = open_source(source_name, record.path, record.mpp_override, read_options)
    try:
        return source, slide_entry(source.uid, require_mpp(source))
    except BaseException:
        source.close()
        raise


# -- synthetic cohort ---------------------------------------------------------------------------
def generate_synthetic_task(slide_id: str, spec: object, path: str) -> ItemOutcome:
    """Render and write one synthetic slide unless the file already exists."""

    def work() -> ItemOutcome:
        from wsi_pipeline.sources.synthetic import generate_slide

        if Path(path).is_file():
            return ItemOutcome("generate", slide_id, "skipped", reason="slide file exists")
        generate_slide(spec, Path(path))
        return ItemOutcome("generate", slide_id, "done")

    return guarded("generate", slide_id, work)


# -- tile ---------------------------------------------------------------------------------------
def tile_task(
    record: SlideRecord,
    source_name: str,
    config: TilingConfig,
    tid: str,
    params: dict,
    store_root: str,
    qc_dir: str | None,
) -> ItemOutcome:
    """Tile one slide into the store (skipped when its entry is complete) and write its QC files.

    ``tid`` and ``params`` (``tiling_id`` and ``tiling_params``) are computed once by the client,
    so a segmentation model is not hashed again for every slide. The QC picture and contours are
    written for skipped slides too when they are missing, so every slide of the cohort has them
    whichever run tiled it.
    """

    def work() -> ItemOutcome:
        from wsi_pipeline.tiling.qc_files import write_slide_qc

        store = FeatureStore(store_root)
        source, entry = open_slide(record, source_name)
        with source:
            warnings = [w for w in (mpp_disagreement(source),) if w]
            key = tiling_key(tid, entry)
            # One writer per entry: the same slide under two ids, or two runs on one store, wait
            # for each other here, and the second finds the entry complete.
            with store.claim(key) as must_write:
                if must_write:
                    tiling = tile_slide(source, config)
                    store.write_tiling(
                        tid,
                        entry,
                        tiling.coords,
                        tiling.qc,
                        attrs=tiling_attrs(record, source, config, params, tiling),
                        masks={"tissue": tiling.tissue.tissue, "pen": tiling.tissue.pen},
                    )
                    status, reason = "done", None
                else:
                    status, reason = "skipped", "tiling already in store"
            attrs = store.attrs(key)
            if qc_dir is not None:
                write_slide_qc(source, store, tid, entry, record.slide_id, Path(qc_dir), refresh=status == "done")
        qc_row = {k: attrs.get(k) for k in QC_SUMMARY_KEYS}
        info = {"slide_uid": entry, "tiling_id": tid, "n_tiles": attrs.get("n_tiles"), "read_level": attrs.get("read_level"),
                "qc": qc_row, "warnings": warnings}
        if not attrs.get("n_tiles"):
            return ItemOutcome("tile", record.slide_id, "failed", reason=no_tiles_reason(attrs, config), info=info)
        return ItemOutcome("tile", record.slide_id, status, reason=reason, info=info)

    return guarded("tile", record.slide_id, work)


#: Per-slide numbers of a tiling entry that go to the cohort QC table: its columns but those the
#: run itself knows (which slide, its status) and the flags the table derives.
QC_SUMMARY_KEYS = tuple(c for c in QC_TABLE_COLUMNS if c not in {"slide_id", "slide_uid", "status", "reason", "flags"})


def tiling_attrs(record: SlideRecord, source: TileSource, config: TilingConfig, params: dict, tiling: SlideTiling) -> dict:
    """Provenance and summary stored on a tiling entry."""
    geometry = tiling.geometry
    return {
        "slide_path": str(record.path),
        "slide_id": record.slide_id,
        "vendor": source.vendor,
        "slide_mpp": tiling.slide_mpp,
        "metadata_mpp": source.metadata_mpp,
        "mpp_source": "override" if record.mpp_override is not None else "metadata",
        "level0_size": list(source.dimensions),
        "read_level": geometry.read_level,
        "target_mpp": config.mpp,
        "effective_mpp": geometry.mpp,
        "tile_px": config.tile_px,
        "tile_um": config.tile_px * geometry.mpp,
        "tile_size_level0": geometry.size_level0,
        "tiling_params": params,
        "mask_scale": tiling.tissue.scale,
        "mask_mpp": tiling.tissue.mpp,
        **tiling.summary(),
    }


def no_tiles_reason(attrs: dict, config: TilingConfig) -> str:
    """Why a slide kept no tile, from its entry's counts."""
    if not attrs.get("tissue_area_mm2"):
        return "no tissue found: is the slide blank, or does tiling.tissue need another method?"
    return (
        f"no tile kept: {attrs.get('dropped_tissue', 0)} had tissue below tiling.qc.min_tissue "
        f"({config.qc.min_tissue:.0%}), {attrs.get('dropped_pen', 0)} too much pen (tiling.qc.max_pen), "
        f"{attrs.get('dropped_blur', 0)} too blurred (tiling.qc.min_blur)"
    )


# -- extract ------------------------------------------------------------------------------------
#: Why a slide is not extracted when its tiling failed (status ``blocked``, not a second failure).
TILING_FAILED = "not extracted: its tiling failed (see the tile stage's failure)"


def extract_task(
    record: SlideRecord,
    source_name: str,
    tid: str,
    tile_px: int,
    features: FeaturesConfig,
    encoder_id: str,
    store_root: str,
    threads: int,
    tiled: ItemOutcome | None = None,
) -> ItemOutcome:
    """Embed one slide's tiles into the store (skipped when its entry is complete).

    ``encoder_id`` and ``tid`` are computed once by the client, so a slide already in the store
    is skipped without loading the encoder on the worker.

    ``tiled`` is the slide's tile outcome when the engine chains the two stages: submitted as
    the tile task's future, so extraction starts as soon as *this* slide is tiled. A failed
    tiling makes this task ``blocked``, doing nothing: the slide's failure is the tile stage's.
    ``threads`` is the thread budget outside a Dask worker; on one, the worker's own count.
    """
    if tiled is not None and tiled.status == "failed":
        return ItemOutcome("extract", record.slide_id, "blocked", reason=TILING_FAILED)

    def work() -> ItemOutcome:
        from wsi_pipeline.features.encoder import load_encoder
        from wsi_pipeline.features.extract import (
            extract_slide_features,
            read_options_for,
        )

        budget = worker_threads(threads)
        set_torch_threads(budget)
        store = FeatureStore(store_root)
        source, entry_name = open_slide(record, source_name, read_options_for(features, budget))
        info = {"slide_uid": entry_name, "encoder_id": encoder_id}
        with source, store.claim(features_key(encoder_id, tid, entry_name)) as must_write:
            if not must_write:
                return ItemOutcome("extract", record.slide_id, "skipped", reason="features already in store", info=info)
            entry = store.read_tiling(tid, entry_name)
            encoder = load_encoder(
                features.encoder, features.weights, features.device, precision=features.precision, compile=features.compile,
                allow_download=features.allow_download, stain=features.stain,
            )
            if encoder.encoder_id != encoder_id:
                raise RuntimeError(f"worker loaded encoder {encoder.encoder_id}, client expected {encoder_id}: weights differ between machines")
            n = extract_slide_features(
                source,
                entry.coords,
                float(entry.attrs["tile_size_level0"]),
                tile_px,
                encoder,
                store,
                tiling_id=tid,
                slide_uid=entry_name,
                batch_size=features.batch_size,
                attrs={
                    "slide_path": str(record.path),
                    "slide_id": record.slide_id,
                    **{k: entry.attrs[k] for k in TILING_PROVENANCE if k in entry.attrs},
                },
            )
            return ItemOutcome("extract", record.slide_id, "done", info={**info, "n_tiles": n})

    return guarded("extract", record.slide_id, work)


# -- train --------------------------------------------------------------------------------------
def train_task(
    plan: FoldPlan,
    aggregator: str,
    source: BagSource,
    targets: dict[str, Any],
    task: Task,
    model: ModelConfig,
    seed: int,
    threads: int,
    validation: ValidationConfig | None = None,
    output_dir: str | None = None,
) -> ItemOutcome:
    """Train one aggregator on one fold (of one repeat) for the task and predict its test patients.

    ``source`` holds paths and keys, never arrays. The bags come from
    :func:`~wsi_pipeline.mil.bag_cache.run_bags`: when the source's bags fit the worker's
    budget (``model.bag_memory_gb``) they are read once per worker and kept for the run's
    other folds and aggregators (one source at a time: the next run's first task drops
    them); when they do not, each bag is read from its source when a step needs it, the next
    step's read running while this one computes. ``info`` records the mode and the share
    of the epochs' time spent waiting for bags.

    ``targets`` holds the raw targets of the fold's patients (a small mapping, never arrays);
    ``task`` is bound to the cohort and fitted here, on the fold's fit patients.
    ``model.device`` is resolved here, on the worker (``'auto'``: its GPU when it has one),
    since the client may have no GPU while the workers do; the device is recorded in ``info``.

    With ``model.grid`` the settings are chosen by nested CV on inner folds of the fold's
    training patients (``validation.inner_folds``, :func:`~wsi_pipeline.mil.nested.nested_train_fold`).
    With ``output_dir`` the fold's ``model.pt`` and ``history.json`` are written to
    ``<output_dir>/training/<fold>-<aggregator>/`` by this task, on its worker; ``info`` carries
    the fold's ``training.csv`` row and its loss curves (:func:`~wsi_pipeline.mil.training_record.record_fold`).
    """
    name = f"{getattr(plan, 'name', '?')}-{aggregator}"

    def work() -> ItemOutcome:
        from wsi_pipeline.mil.bag_cache import StreamedBags, memory_budget, run_bags
        from wsi_pipeline.mil.cv import train_fold
        from wsi_pipeline.mil.nested import nested_train_fold, point_config
        from wsi_pipeline.mil.train import TrainConfig, resolve_device
        from wsi_pipeline.mil.training_record import record_fold

        set_torch_threads(worker_threads(threads))
        device = resolve_device(model.device)
        config = TrainConfig.from_model(model)  # checked when the workflow was loaded
        budget = memory_budget(model.bag_memory_gb)
        bags, bag_plan = run_bags(source, plan.patients, by_slide=config.bags != "patient-early", budget=budget)
        names = dict(source.slide_names()) if config.bags == "slide" else None
        started = time.perf_counter()
        if model.grid:  # nested CV: the grid point chosen on inner folds of this fold's training patients
            inner = validation or ValidationConfig()
            rows = nested_train_fold(plan, aggregator, bags, targets, model, seed, inner_folds=inner.inner_folds,
                                     val_fraction=inner.val_fraction, config=config, task=task, device=device, slide_names=names)
            config = point_config(config, model, aggregator, rows.attrs["history"]["grid_search"]["chosen"])
        else:
            rows = train_fold(plan, aggregator, bags, targets, config, seed, task=task, device=device, slide_names=names)
        seconds = time.perf_counter() - started
        history = rows.attrs.get("history", {})
        # The worker writes the fold's checkpoint into the run folder itself: the engine already
        # requires every worker to write there (tiling QC; preflight checks the "output folder" for
        # writing on each worker), and the weights then never travel through the scheduler, nor
        # into the outcome that run.json records. Only small values come back (a row, the curves).
        record = record_fold(history, plan=plan, aggregator=aggregator, config=config, output_dir=output_dir,
                             features_id=source.features_id, device=str(device), seconds=seconds)
        keys = ("best_epoch", "epochs_run", "stopped_early", "best_val_loss", "best_val_score", "selection_metric",
                "bags_per_step", "fitted_state")
        if isinstance(bags, StreamedBags):
            bags.close()
        epoch_seconds, data_seconds = sum(history.get("epoch_seconds", [])), sum(history.get("data_seconds", []))
        info = {"predictions": rows.to_dict(orient="records"), "training": {k: history.get(k) for k in keys},
                "validation_predictions": history.get("validation_predictions", []),
                "device": str(device), "bags": bag_plan.mode,
                "data_share": round(data_seconds / epoch_seconds, 4) if epoch_seconds else None}
        info["training"].update(record["training"])
        info["curves"] = record["curves"]  # popped by the train stage: the figure's, not run.json's
        return ItemOutcome("train", name, "done", info=info)

    return guarded("train", name, work)
