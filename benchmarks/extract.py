"""Extraction throughput: the data path against a naive reader, and end to end against the model alone.

All figures come from one run on one machine, so only their ratios mean much (machines are noisy).
The slide is a synthetic 40x (0.25 µm/px) pyramidal JPEG laid out as Aperio scanners write it
(levels 1x, 4x, 16x; RGB-coded JPEG tiles with shared tables), written once into ``--workdir``;
tiles are 256 px at 0.5 µm/px, so every tile comes from level 0 (512 x 512 level-0 px). Measured:

- ``naive_tiles_per_s``: one thread calling OpenSlide ``read_region`` at level 0 per tile and
  resizing with PIL, as CLAM and TRIDENT do (on ``--naive-tiles`` tiles spread over the grid);
- ``data_path_tiles_per_s``: ``extract_slide_features`` with a trivial encoder (the mean colour of
  each tile), all cores reading: our reads, decoding, batching, device upload and store writes;
  ``data_path_openslide_tiles_per_s`` is the same with ``reader: openslide`` (strips through
  OpenSlide, no raw JPEG path);
- ``model_only_tiles_per_s``: the encoder on uint8 batches already on the device (preprocessing
  included), ``end_to_end_tiles_per_s``: the whole path from the slide with that encoder and batch;
- ``peak_rss_mb``: peak resident memory (``VmHWM``) of the data path on a small and a large slide,
  each in a fresh process: it should stay flat; ``import_rss_mb`` is the same process after its
  imports only (torch and timm hold most of it);
- on a GPU, ``vit_end_to_end``: end-to-end and model-only tiles/s for ViT-L/16, ViT-H/14 and
  ViT-g/14 architectures with random weights.

Usage::

    python benchmarks/extract.py --json OUT.json [--size 16384] [--small-size 8192] [--workdir /tmp/extract-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsi_pipeline.features import extract_slide_features, load_encoder
from wsi_pipeline.features.registry import (
    ENCODERS,
    EncoderSpec,
    register_encoder,
    vit_cfg,
)
from wsi_pipeline.sources.protocol import ReadOptions
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import write_aperio_like_slide
from wsi_pipeline.sources.wsi import flatten_on_white, resize_rgb
from wsi_pipeline.store import FeatureStore

#: Level-0 µm/px of the slide and µm/px / side of the tiles.
SLIDE_MPP, TILE_MPP, TILE_PX = 0.25, 0.5, 256
SIZE_LEVEL0 = round(TILE_PX * TILE_MPP / SLIDE_MPP)

#: ViT architectures of the foundation-model classes (timm names, random weights, 224 px input).
VITS = {
    "ViT-L/16 (UNI class)": ("vit_large_patch16_224", {}),
    "ViT-H/14 (UNI2-h, Virchow2 class)": ("vit_huge_patch14_224", {}),
    "ViT-g/14 (H-optimus-0, GigaPath class)": ("vit_giant_patch14_dinov2", {"img_size": 224}),
}


class MeanColour(nn.Module):
    """The trivial encoder: each tile's mean normalised colour, so only the data path is timed."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3))


def register_benchmark_encoders() -> None:
    """Register the trivial encoder and the random-weight ViTs (once per process)."""
    if "bench-mean-colour" not in ENCODERS:
        register_encoder(EncoderSpec(name="bench-mean-colour", architecture="mean-colour", factory=MeanColour, dim=3,
                                     pretrained_cfg=vit_cfg(TILE_PX), output="pooled", random_seed=0, is_demo=True,
                                     description="benchmark: mean colour"))
    for label, (arch, kwargs) in VITS.items():
        name = f"bench-{arch}"
        if name not in ENCODERS:
            dim = {"vit_large_patch16_224": 1024, "vit_huge_patch14_224": 1280, "vit_giant_patch14_dinov2": 1536}[arch]
            register_encoder(EncoderSpec(name=name, architecture=arch, model_kwargs=kwargs, dim=dim, pretrained_cfg=vit_cfg(224),
                                         output="class_token", random_seed=0, is_demo=True, description=label))


def ensure_slide(workdir: Path, size: int) -> Path:
    """The Aperio-layout slide of ``size`` x ``size`` px, written once."""
    path = workdir / f"aperio-like-{size}.svs"
    if not path.is_file():
        started = time.perf_counter()
        write_aperio_like_slide(path, size, size, seed=0, workers=os.cpu_count() or 1)
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def grid(size: int) -> np.ndarray:
    """Every 0.5 µm/px tile position of the slide, row-major (as a tiling stores them)."""
    steps = range(0, size - SIZE_LEVEL0 + 1, SIZE_LEVEL0)
    return np.array([(x, y) for y in steps for x in steps], dtype=np.int64)


def naive_rate(path: Path, coords: np.ndarray) -> float:
    """Tiles/s of one thread: OpenSlide ``read_region`` at level 0 per tile, then a PIL resize."""
    import openslide

    slide = openslide.OpenSlide(str(path))
    started = time.perf_counter()
    for x, y in coords:
        rgb = flatten_on_white(slide.read_region((int(x), int(y)), 0, (SIZE_LEVEL0, SIZE_LEVEL0)))
        resize_rgb(rgb, TILE_PX, TILE_PX)
    elapsed = time.perf_counter() - started
    slide.close()
    return len(coords) / elapsed


def path_rate(path: Path, coords: np.ndarray, encoder_name: str, device: str, batch_size: int | str,
              reader: str = "auto", workers: int | None = None) -> tuple[float, str]:
    """Tiles/s of ``extract_slide_features`` from the slide, and the read path used."""
    encoder = load_encoder(encoder_name, device=device)
    options = ReadOptions(reader=reader, workers=workers or os.cpu_count() or 1, device=str(encoder.device),
                          decoder="gpu" if encoder.device.type == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as folder, open_source("wsi", path, read_options=options) as source:
        store = FeatureStore(Path(folder) / "store")
        _synchronise(encoder.device)
        started = time.perf_counter()
        n = extract_slide_features(source, coords, SIZE_LEVEL0, TILE_PX, encoder, store, tiling_id="bench",
                                   slide_uid="slide", batch_size=batch_size, attrs={})
        _synchronise(encoder.device)
        elapsed = time.perf_counter() - started
        return n / elapsed, source.read_path


def model_only_rate(encoder_name: str, device: str, batch_size: int | str, tiles: np.ndarray, seconds: float = 5.0) -> tuple[float, int]:
    """Tiles/s of the encoder on uint8 batches already on the device, and the batch size used."""
    encoder = load_encoder(encoder_name, device=device)
    batch_size = encoder.batch_size(batch_size)
    reps = -(-batch_size // len(tiles))
    batch = torch.from_numpy(np.concatenate([tiles] * reps)[:batch_size]).to(encoder.device)
    encoder.embed(batch)  # warm-up (cuDNN autotuning, lazy init)
    _synchronise(encoder.device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 3 * batch_size:
        encoder.embed(batch)
        done += batch_size
    _synchronise(encoder.device)
    return done / (time.perf_counter() - started), batch_size


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_child(path: Path | None, device: str) -> float:
    """Run the data path on ``path`` in a fresh process; return its peak RSS in MB.

    With ``path`` None the child only imports and builds the trivial encoder: the baseline
    (torch alone holds about 500 MB resident) that the data path's own memory sits on.
    """
    work = (
        "p = Path(sys.argv[1]); import openslide; size = openslide.OpenSlide(str(p)).dimensions[0];"
        "b.path_rate(p, b.grid(size), 'bench-mean-colour', sys.argv[2], 64);"
        if path is not None
        else "b.load_encoder('bench-mean-colour', device=sys.argv[2]);"
    )
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import extract as b; b.register_benchmark_encoders();"
        "from pathlib import Path;" + work +
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code, str(path), device], capture_output=True, text=True, cwd=root, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def sample_tiles(path: Path, coords: np.ndarray, n: int) -> np.ndarray:
    with open_source("wsi", path) as source:
        return next(iter(source.read_tiles(coords[:n], SIZE_LEVEL0, TILE_PX, n)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results there too")
    parser.add_argument("--size", type=int, default=16384, help="side of the main slide, level-0 px")
    parser.add_argument("--small-size", type=int, default=8192, help="side of the smaller slide for the memory check")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "extract-bench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder", default="auto", help="encoder for model-only vs end to end; auto: demo ResNet-18 on CPU, ViT-L/16 on GPU")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--naive-tiles", type=int, default=400)
    parser.add_argument("--model-seconds", type=float, default=5.0, help="how long the model-only rate is measured")
    parser.add_argument("--skip-vits", action="store_true", help="on a GPU, skip the three ViT end-to-end rows")
    args = parser.parse_args(argv)
    batch_size: int | str = args.batch_size if args.batch_size == "auto" else int(args.batch_size)

    register_benchmark_encoders()
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = str(load_encoder("bench-mean-colour", device=args.device).device)
    on_gpu = device.startswith("cuda")
    encoder = args.encoder if args.encoder != "auto" else ("bench-vit_large_patch16_224" if on_gpu else "demo-resnet18-random")
    large, small = ensure_slide(args.workdir, args.size), ensure_slide(args.workdir, args.small_size)
    coords = grid(args.size)
    results: dict[str, Any] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "slide": {"size_px": [args.size, args.size], "mpp": SLIDE_MPP, "levels": "1x, 4x, 16x (Aperio layout, RGB-coded JPEG)",
                  "tiles": len(coords), "tile_px": TILE_PX, "tile_mpp": TILE_MPP},
    }
    # Spread over the whole slide, so the sample holds tissue and glass as the whole grid does.
    sample = coords[np.unique(np.linspace(0, len(coords) - 1, min(args.naive_tiles, len(coords))).astype(int))]
    results["naive_tiles_per_s"] = round(naive_rate(large, sample), 1)
    rate, read_path = path_rate(large, coords, "bench-mean-colour", args.device, 64)
    results["data_path_tiles_per_s"], results["read_path"] = round(rate, 1), read_path
    rate, _ = path_rate(large, coords, "bench-mean-colour", args.device, 64, reader="openslide")
    results["data_path_openslide_tiles_per_s"] = round(rate, 1)
    results["data_path_speedup"] = round(results["data_path_tiles_per_s"] / results["naive_tiles_per_s"], 2)

    tiles = sample_tiles(large, coords, 64)
    model_only, used_batch = model_only_rate(encoder, args.device, batch_size, tiles, args.model_seconds)
    end_to_end, _ = path_rate(large, coords, encoder, args.device, used_batch)
    results.update({
        "encoder": encoder,
        "batch_size": used_batch,
        "precision": load_encoder(encoder, device=args.device).precision,
        "model_only_tiles_per_s": round(model_only, 1),
        "end_to_end_tiles_per_s": round(end_to_end, 1),
        "end_to_end_over_model_only": round(end_to_end / model_only, 3),
    })
    results["peak_rss_mb"] = {f"{args.small_size}x{args.small_size}": round(peak_rss_child(small, args.device), 1),
                              f"{args.size}x{args.size}": round(peak_rss_child(large, args.device), 1)}
    values = list(results["peak_rss_mb"].values())
    results["peak_rss_ratio"] = round(max(values) / min(values), 3)
    results["import_rss_mb"] = round(peak_rss_child(None, args.device), 1)
    if on_gpu and not args.skip_vits:
        rows = {}
        for label, (arch, _) in VITS.items():
            name = f"bench-{arch}"
            model_rate, vit_batch = model_only_rate(name, args.device, batch_size, tiles, args.model_seconds)
            rate, _ = path_rate(large, coords, name, args.device, vit_batch)
            rows[label] = {"batch_size": vit_batch, "model_only_tiles_per_s": round(model_rate, 1),
                           "end_to_end_tiles_per_s": round(rate, 1), "ratio": round(rate / model_rate, 3)}
        results["vit_end_to_end"] = rows
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
