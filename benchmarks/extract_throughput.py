"""Tile-embedding throughput of the extract path against the encoder alone, in one run.

Prints tiles/s of (a) the encoder on tiles already in memory and (b) the full per-slide path
(batched source reads + preprocessing + encoder + float16 writes to the store), and their ratio:
a ratio near 1 means reading keeps up with the model. Usage::

    python benchmarks/extract_throughput.py [--encoder demo-resnet18-random] [--size 4096] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.config import TilingConfig
from wsi_pipeline.features import extract_slide_features, get_encoder_spec, load_encoder
from wsi_pipeline.sources.synthetic import SyntheticSlideSpec, generate_slide
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.store import FeatureStore
from wsi_pipeline.tiling import tile_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="demo-resnet18-random")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--size", type=int, default=4096, help="synthetic slide side, level-0 px")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    spec = get_encoder_spec(args.encoder)
    encoder = load_encoder(args.encoder, args.weights, args.device)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slide.tiff"
        generate_slide(SyntheticSlideSpec(width=args.size, height=args.size, mpp=0.5, positive=True, seed=0), path)
        config = TilingConfig(mpp=spec.recommended_mpp, tile_px=spec.recommended_tile_px)
        with open_source("wsi", path) as slide:
            tiling = tile_slide(slide, config)
            coords, size = tiling.coords, tiling.geometry.size_level0
            tiles = np.concatenate(list(slide.read_tiles(coords, size, config.tile_px, args.batch_size)))
            encoder.embed(tiles[: args.batch_size])  # warm-up
            if encoder.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i in range(0, len(tiles), args.batch_size):
                encoder.embed(tiles[i : i + args.batch_size])
            model_only = len(tiles) / (time.perf_counter() - start)
            store = FeatureStore(Path(folder) / "store")
            start = time.perf_counter()
            extract_slide_features(slide, coords, size, config.tile_px, encoder, store, tiling_id="bench",
                                   slide_uid="s", batch_size=args.batch_size, attrs={})
            full_path = len(coords) / (time.perf_counter() - start)
    print(f"encoder {args.encoder} on {encoder.device}, {len(coords)} tiles of {config.tile_px} px, torch threads {torch.get_num_threads()}")
    print(f"model only      : {model_only:8.1f} tiles/s")
    print(f"extract path    : {full_path:8.1f} tiles/s")
    print(f"ratio path/model: {full_path / model_only:8.2f}")


if __name__ == "__main__":
    main()
