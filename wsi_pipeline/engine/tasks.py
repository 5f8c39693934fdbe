"""The functions Dask runs on workers: one slide (generate, tile, extract) or one fold (train).

Each is idempotent: it checks the store (or output file) first and reports ``skipped`` when
the work is already complete; it writes atomically and marks completion last; it never raises
(see :func:`guarded`), so one bad slide cannot stop a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from wsi_pipeline.cohort.table import SlideRecord
from wsi_pipeline.config.workflow import FeaturesConfig, ModelConfig, TilingConfig
from wsi_pipeline.engine.outcome import ItemOutcome, guarded
from wsi_pipeline.sources.fingerprint import slide_uid
from wsi_pipeline.sources.wsi import WholeSlide
from wsi_pipeline.store.feature_store import FeatureStore, features_key, tiling_key
from wsi_pipeline.tiling.slide_tiling import tile_slide, tiling_id, tiling_params


#: Tiling attributes repeated on every feature entry, so an entry explains itself alone.
TILING_PROVENANCE = ("slide_mpp", "level0_size", "read_level", "target_mpp", "tile_px", "tile_um", "tile_size_level0")


def set_torch_threads(threads: int) -> None:
    """Give torch the worker's thread budget (its default would claim every core per worker)."""
    import torch

    torch.set_num_threads(max(1, threads))


def identify_slide(record: SlideRecord) -> tuple[WholeSlide, str]:
    """Open a slide and compute its store uid (content fingerprint)."""
    slide = WholeSlide(record.path, record.mpp_override)
    return slide, slide_uid(record.path, slide.properties)


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
def tile_task(record: SlideRecord, config: TilingConfig, store_root: str, qc_dir: str | None) -> ItemOutcome:
    """Tile one slide into the store (skipped when a complete entry for the same scale exists)."""

    def work() -> ItemOutcome:
        store = FeatureStore(store_root)
        tid = tiling_id(config)
        slide, uid = identify_slide(record)
        with slide:
            key = tiling_key(tid, uid)
            info = {"slide_uid": uid, "tiling_id": tid}
            stored = store.attrs(key)
            # A new µm/px override changes every coordinate: such an entry is redone.
            if stored.get("complete") is True and stored.get("slide_mpp") == slide.mpp:
                return ItemOutcome("tile", record.slide_id, "skipped", reason="tiling already in store", info={**info, "n_tiles": stored.get("n_tiles")})
            tiling = tile_slide(slide, config)
            if len(tiling.coords) == 0:
                return ItemOutcome(
                    "tile",
                    record.slide_id,
                    "failed",
                    reason=f"no tile has ≥{config.tissue.min_tissue_fraction:.0%} tissue: is the slide blank, or "
                    "tiling.tissue.min_tissue_fraction too high?",
                    info=info,
                )
            level = slide.level_for_downsample(tiling.geometry.size_level0 / tiling.geometry.tile_px)
            store.write_tiling(
                tid,
                uid,
                tiling.coords,
                tiling.tissue_fraction,
                attrs={
                    "slide_path": str(record.path),
                    "slide_id": record.slide_id,
                    "slide_mpp": slide.mpp,
                    "level0_size": list(slide.dimensions),
                    "read_level": level,
                    "tile_px": config.tile_px,
                    "tile_um": config.tile_px * config.mpp,
                    "tile_size_level0": tiling.geometry.size_level0,
                    "target_mpp": config.mpp,
                    "tiling_params": tiling_params(config),
                    "n_grid_tiles": tiling.n_grid_tiles,
                },
            )
            if qc_dir is not None:
                from wsi_pipeline.tiling.overlay import save_tiling_overlay

                save_tiling_overlay(tiling, Path(qc_dir) / f"{record.slide_id}.png")
            return ItemOutcome("tile", record.slide_id, "done", info={**info, "n_tiles": int(len(tiling.coords)), "read_level": level})

    return guarded("tile", record.slide_id, work)


# -- extract ------------------------------------------------------------------------------------
def extract_task(
    record: SlideRecord, tiling: TilingConfig, features: FeaturesConfig, encoder_id: str, store_root: str, threads: int
) -> ItemOutcome:
    """Embed one slide's tiles into the store (skipped when its entry is complete).

    ``encoder_id`` is computed once by the client, so a slide already in the store is skipped
    without loading the encoder on the worker.
    """

    def work() -> ItemOutcome:
        from wsi_pipeline.features.encoder import load_encoder
        from wsi_pipeline.features.extract import extract_slide_features

        set_torch_threads(threads)
        store = FeatureStore(store_root)
        tid = tiling_id(tiling)
        slide, uid = identify_slide(record)
        with slide:
            info = {"slide_uid": uid, "encoder_id": encoder_id}
            if store.is_complete(features_key(encoder_id, tid, uid)):
                return ItemOutcome("extract", record.slide_id, "skipped", reason="features already in store", info=info)
            entry = store.read_tiling(tid, uid)
            encoder = load_encoder(features.encoder, features.weights, features.device)
            if encoder.encoder_id != encoder_id:
                raise RuntimeError(f"worker loaded encoder {encoder.encoder_id}, client expected {encoder_id}: weights differ between machines")
            n = extract_slide_features(
                slide,
                entry.coords,
                float(entry.attrs["tile_size_level0"]),
                tiling.tile_px,
                encoder,
                store,
                tiling_id=tid,
                slide_uid=uid,
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
@dataclass(frozen=True)
class BagSource:
    """Where a patient's bag comes from: the feature entries of its slides."""

    store_root: str
    encoder_id: str
    tiling_id: str
    patient_slides: tuple[tuple[str, tuple[str, ...]], ...]  # (patient id, slide uids)


@lru_cache(maxsize=2)
def load_bags(source: BagSource) -> dict[str, np.ndarray]:
    """Concatenate the tile features of each patient's slides (cached per worker process)."""
    store = FeatureStore(source.store_root)
    bags = {}
    for patient, uids in source.patient_slides:
        parts = [store.read_features(source.encoder_id, source.tiling_id, uid).features for uid in uids]
        bags[patient] = np.concatenate(parts, axis=0)  # float16 as stored; training casts per step
    return bags


def train_task(
    plan: object, aggregator: str, source: BagSource, labels: dict[str, int], model: ModelConfig, seed: int, threads: int
) -> ItemOutcome:
    """Train one aggregator on one fold and predict its test patients."""
    name = f"fold{getattr(plan, 'fold', '?')}-{aggregator}"

    def work() -> ItemOutcome:
        from wsi_pipeline.mil.cv import train_fold
        from wsi_pipeline.mil.train import TrainConfig

        set_torch_threads(threads)
        config = TrainConfig(**model.model_dump(exclude={"aggregators"}))
        rows = train_fold(plan, aggregator, load_bags(source), labels, config, seed)
        history = rows.attrs.get("history", {})
        summary = {k: history.get(k) for k in ("best_epoch", "epochs_run", "stopped_early", "best_val_loss", "best_val_auc")}
        return ItemOutcome("train", name, "done", info={"predictions": rows.to_dict(orient="records"), "training": summary})

    return guarded("train", name, work)
