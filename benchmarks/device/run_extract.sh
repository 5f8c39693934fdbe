#!/usr/bin/env bash
# Run benchmarks/extract.py on a GPU host with no network: install the wheels that
# benchmarks/device/fetch_wheels.sh fetched into .device-wheels/, check the imports and the GPU read
# path, then run the benchmark, keeping its JSON and log in $OUT.
#
#   bash benchmarks/device/run_extract.sh [--install-only] [extract.py arguments...]
#
# On the workplace's device tool: command `bash benchmarks/device/run_extract.sh`, carry
# [".device-wheels"]. Environment: OUT (where extract.json and extract.log go; ./out-device if unset),
# PYTHON (python3), WHEELS (.device-wheels), EXTRACT_TIMEOUT (seconds for the benchmark; default: what is
# left of 540 s since the script started, so that the whole run fits the device tool's 600 s per command).
#
# The wheels go into PYTHON's own environment (on the device a fresh machine each time, so nothing
# lasting is changed) and only what is missing or too old is installed: torch, numpy and the rest
# stay the image's. If pip cannot resolve the set against the image (lifelines pins pandas<3, say),
# the wheels go in without dependency resolution, each at least at its fetched version; if the
# environment cannot be written, into a --target folder put first on PYTHONPATH. The package itself
# is not installed: the repository root goes on PYTHONPATH.
#
# On CUDA, the suite's CUDA-only tests run before the benchmark (tests/mil/test_cuda_training.py).
# On CUDA, before the benchmark, the project's GPU read path (decoder gpu, nvImageCodec) reads a small
# Aperio-like slide beside the CPU path; if that fails, nvImageCodec is removed so the benchmark still
# runs (on torchvision's nvJPEG), and the log says so.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/out-device}
mkdir -p "$out"
python=${PYTHON:-python3}
wheels=${WHEELS:-.device-wheels}
install_only=0
if [[ ${1:-} == --install-only ]]; then install_only=1; shift; fi

install_wheels() {
    shopt -s nullglob
    local files=("$wheels"/*.whl) names=() minimums=() file base
    shopt -u nullglob
    if ((${#files[@]} == 0)); then
        echo "no wheels in $wheels: run benchmarks/device/fetch_wheels.sh where PyPI is reachable, and carry $wheels" >&2
        return 1
    fi
    for file in "${files[@]}"; do
        base=$(basename "$file")
        names+=("${base%%-*}")
        minimums+=("${base%%-*}>=$(cut -d- -f2 <<<"$base")")
    done
    local pip=("$python" -m pip install --no-index --find-links "$wheels" --no-cache-dir --disable-pip-version-check --progress-bar off)
    echo "== installing what the image lacks (${#names[@]} wheels in $wheels)"
    if "${pip[@]}" "${names[@]}"; then
        echo "installed with dependency resolution"
    elif "${pip[@]}" --no-deps "${minimums[@]}"; then
        echo "WARNING: installed without dependency resolution (pip could not resolve the set against this environment: see above)"
    else
        echo "WARNING: this environment could not be written; installing into /tmp/wsi-site instead"
        "${pip[@]}" --no-deps --target /tmp/wsi-site "${files[@]}"
        export PYTHONPATH=/tmp/wsi-site${PYTHONPATH:+:$PYTHONPATH}
    fi
}

import_check() {
    "$python" - <<'EOF'
from importlib import metadata

import wsi_pipeline.engine.runner  # noqa: F401  (distributed, pydantic, lifelines' users)
import wsi_pipeline.features  # noqa: F401
import wsi_pipeline.sources  # noqa: F401
import wsi_pipeline.store  # noqa: F401
import imagecodecs
import openslide

print("imports ok; openslide library", openslide.__library_version__, "; imagecodecs jpeg8", imagecodecs.JPEG8.available)
names = ("torch", "torchvision", "timm", "numpy", "pandas", "scipy", "scikit-image", "tifffile", "zarr", "numcodecs",
         "dask", "distributed", "pydantic", "lifelines", "openslide-python", "openslide-bin", "imagecodecs",
         "nvidia-nvimgcodec-cu13", "nvidia-nvjpeg", "typing-extensions")
for name in names:
    try:
        print(f"  {name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"  {name} MISSING")
EOF
}

# On CUDA: nvImageCodec's backends on one JPEG (a diagnostic: printed, never fatal), then the
# project's GPU read path (decoder gpu, as the benchmark reads) beside the CPU path on a small
# Aperio-like slide: non-zero if that read fails. Without CUDA it only says so.
gpu_check() {
    "$python" - <<'EOF'
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

if not torch.cuda.is_available():
    print("no CUDA device: skipped")
    raise SystemExit(0)
try:
    from nvidia import nvimgcodec
except ImportError as error:
    print(f"nvImageCodec not importable ({error}): GPU decoding goes through torchvision's nvJPEG")
else:
    print("nvImageCodec", nvimgcodec.__version__, "built for CUDA", nvimgcodec.__cuda_version__)
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.ones((16, 16, 1), dtype=np.uint8))
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, "JPEG", quality=90)
    reference = np.asarray(Image.open(io.BytesIO(stream.getvalue())).convert("RGB")).astype(np.int16)
    for label in ("default", "GPU_ONLY", "HW_GPU_ONLY"):
        try:
            backends = {} if label == "default" else {"backends": [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, label))]}
            (image,) = nvimgcodec.Decoder(device_id=0, **backends).decode([stream.getvalue()])
            if image is None:
                print(f"  {label}: could not decode")
                continue
            decoded = torch.as_tensor(image, device="cuda").cpu().numpy().astype(np.int16)
            print(f"  {label}: {tuple(decoded.shape)}, max |difference| from Pillow {np.abs(decoded - reference).max()}")
        except Exception as error:  # a diagnostic: report and go on
            print(f"  {label}: {type(error).__name__}: {error}")

from wsi_pipeline.sources.protocol import ReadOptions
from wsi_pipeline.sources.registry import open_source
from wsi_pipeline.sources.synthetic import write_aperio_like_slide

path = Path(tempfile.mkdtemp()) / "gpu-check.svs"
write_aperio_like_slide(path, 2048, 2048, seed=0, workers=4)
coords = np.array([(x, y) for y in range(0, 2048, 512) for x in range(0, 2048, 512)])


def read(decoder: str, device: str) -> tuple[np.ndarray, str]:
    options = ReadOptions(workers=4, decoder=decoder, device=device)
    with open_source("wsi", path, read_options=options) as source:
        batches = [b.cpu().numpy() if torch.is_tensor(b) else np.asarray(b) for b in source.read_tiles(coords, 512, 256, 8)]
        return np.concatenate(batches), source.read_path


cpu, cpu_path = read("cpu", "cpu")
gpu, gpu_path = read("gpu", "cuda")
difference = np.abs(cpu.astype(np.int16) - gpu.astype(np.int16))
print(f"project read path, {len(coords)} tiles: cpu '{cpu_path}'; gpu '{gpu_path}'; "
      f"|gpu - cpu| max {difference.max()}, mean {difference.mean():.3f}")
EOF
}

main() {
    echo "== $(date -u +%FT%TZ) $(hostname) in $root"
    if command -v nvidia-smi >/dev/null; then nvidia-smi || true; else echo "nvidia-smi: not found"; fi
    "$python" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'

    install_wheels
    export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
    "$python" -m pip check || echo "(pip check: mismatches above; the import check below decides)"

    echo "== import check"
    import_check

    echo "== GPU read path (nvImageCodec, as the benchmark's CUDA path uses it)"
    if ! gpu_check; then
        local codec
        codec=$("$python" -c 'import os, nvidia.nvimgcodec as m; print(os.path.dirname(m.__file__))' 2>/dev/null || true)
        if [[ -n $codec ]]; then
            echo "WARNING: GPU reads failed with nvImageCodec; removing $codec so that the benchmark decodes with torchvision's nvJPEG"
            rm -rf "$codec"
            gpu_check || echo "WARNING: GPU reads fail without nvImageCodec too: the benchmark will probably fail"
        fi
    fi

    # The suite's CUDA-only tests (skipped on CPU machines, so CI never runs them): MIL training on
    # the GPU with and without bf16 autocast. Not fatal: the benchmark below is this run's point.
    echo "== CUDA tests (at most 90 s)"
    timeout 90 "$python" -m pytest -q -p no:cacheprovider tests/mil/test_cuda_training.py \
        || echo "WARNING: CUDA tests failed or timed out (see above)"

    if ((install_only)); then
        echo "== --install-only: done"
        return 0
    fi
    local budget=${EXTRACT_TIMEOUT:-$((540 - SECONDS))}
    echo "== benchmarks/extract.py $* (at most $budget s)"
    local started=$SECONDS
    PYTHONUNBUFFERED=1 timeout --signal=INT --kill-after=20 "$budget" \
        "$python" benchmarks/extract.py --json "$out/extract.json" "$@"
    echo "== done in $((SECONDS - started)) s: $out/extract.json"
}

main "$@" 2>&1 | tee "$out/extract.log"
