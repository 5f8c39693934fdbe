"""Embed every tile of a slide into a feature-store entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wsi_pipeline.config.workflow import FeaturesConfig
from wsi_pipeline.features.background_writer import BackgroundWriter
from wsi_pipeline.features.encoder import LoadedEncoder, pick_device
from wsi_pipeline.features.tile_loader import iter_tile_batches
from wsi_pipeline.sources.protocol import ReadOptions, TileSource
from wsi_pipeline.store.feature_store import FeatureStore


def read_options_for(features: FeaturesConfig, threads: int) -> ReadOptions:
    """How an extraction task reads tiles, from the features config and the worker's threads.

    Reader threads default to the worker's threads but at least 2: reading and decoding
    release the GIL, so they overlap the encoder even on a one-thread worker.
    """
    device = str(pick_device(features.device))
    decoder = features.jpeg_decoder
    if decoder == "auto":
        decoder = "gpu" if device.startswith("cuda") else "cpu"
    return ReadOptions(
        reader=features.reader,
        workers=features.read_workers or max(2, threads),
        scaled_decode=features.jpeg_scaled_decode,
        decoder=decoder,
        device=device,
    )


def extract_slide_features(
    source: TileSource,
    coords: np.ndarray,
    size_level0: float,
    tile_px: int,
    encoder: LoadedEncoder,
    store: FeatureStore,
    *,
    tiling_id: str,
    slide_uid: str,
    batch_size: int | str,
    attrs: dict[str, Any],
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Embed the tiles at ``coords`` and write them, marking the entry complete only at the end.

    Three things overlap: the source's reader threads read and decode the next tiles, the
    encoder embeds the current batch, and a writer thread compresses and stores the previous
    ones (see :class:`~wsi_pipeline.features.background_writer.BackgroundWriter`).

    Parameters
    ----------
    source
        The open slide or image.
    coords
        (N, 2) level-0 top-left corners (from the tiling entry).
    size_level0, tile_px
        Tile side in level-0 px and at the target resolution.
    encoder
        A loaded encoder.
    store
        The feature store.
    tiling_id, slide_uid
        Keys of the entry.
    batch_size
        Tiles per forward pass, or ``'auto'`` (see :meth:`LoadedEncoder.batch_size`).
    attrs
        Provenance added to the entry (slide path, µm/px...).
    on_batch
        Called with the number of tiles done after each batch (progress).

    Returns
    -------
    int
        Number of tiles embedded.
    """
    batch_size = encoder.batch_size(batch_size)
    writer = store.begin_features(
        encoder.encoder_id,
        tiling_id,
        slide_uid,
        n_rows=len(coords),
        dim=encoder.spec.dim,
        attrs={**attrs, **encoder.provenance(), "tiling_id": tiling_id, "slide_uid": slide_uid, "batch_size": batch_size},
    )
    stain_source = slide_stain_source(source, coords, size_level0, tile_px, encoder)
    done = 0
    with BackgroundWriter(writer) as background:
        for batch in iter_tile_batches(source, coords, size_level0, tile_px, batch_size):
            features = encoder.embed(batch, stain_source)
            if not np.isfinite(features).all():
                raise FloatingPointError(f"encoder '{encoder.spec.name}' produced non-finite features")
            background.write(features)
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
    # Known only once tiles were read: the raw JPEG path, or OpenSlide and why.
    stain = {} if stain_source is None else {"stain_source": stain_source.to_dict()}
    writer.complete(tile_reader=getattr(source, "read_path", type(source).__name__), **stain)
    return done


def slide_stain_source(
    source: TileSource, coords: np.ndarray, size_level0: float, tile_px: int, encoder: LoadedEncoder
) -> object | None:
    """The slide's own stains, fitted on a sample of its tiles spread over the grid, when the
    encoder normalises stains per slide; ``None`` otherwise (or with too little tissue)."""
    stain = encoder.preprocessing.stain
    if stain is None or not getattr(stain, "per_slide", False) or len(coords) == 0:
        return None
    n = min(len(coords), stain.settings.slide_sample_tiles)
    sample = coords[np.linspace(0, len(coords) - 1, n).round().astype(int)]
    tiles = np.concatenate([np.asarray(b.cpu()) if hasattr(b, "cpu") else b for b in source.read_tiles(sample, size_level0, tile_px, n)])
    return stain.fit_source(tiles)
