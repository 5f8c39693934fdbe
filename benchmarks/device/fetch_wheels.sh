#!/usr/bin/env bash
# Fetch, where PyPI is reachable, the wheels that benchmarks/device/run_extract.sh installs on a GPU
# host with no network (the workplace's H200 image: Python 3.12, torch 2.11+cu130, numpy, scipy,
# scikit-image, pandas, timm, h5py, tifffile, ... but no zarr, dask, pydantic, openslide,
# lifelines, imagecodecs or nvImageCodec).
#
#   bash benchmarks/device/fetch_wheels.sh        # from anywhere inside the checkout
#
# Writes .device-wheels/ at the repository root (emptied first, so one version of each project),
# ignores it through .git/info/exclude (not .gitignore: the device tool's `carry` takes ignored
# paths), and prints the wheels' size beside what else travels: everything must stay under the
# device tool's 64 MiB. Then run there: bash benchmarks/device/run_extract.sh (carry .device-wheels).
#
# The pins are the versions this project is developed and tested with (pyproject.toml's ranges).
# nvidia-nvimgcodec-cu13 is slimmed to what decoding JPEG on a GPU needs under CPython 3.12 (the
# module for 3.12, the nvJPEG and libjpeg-turbo extensions): the full wheel (25 MB, modules for
# nine Pythons, TIFF/JPEG 2000/OpenCV extensions) would not fit with imagecodecs beside it.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
dest=.device-wheels
limit_mib=64
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi

# Missing from the device image, and their needs that it lacks too.
binary_pins=(
    # zarr 3 and its needs
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
    # dask[distributed]
    dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0 tornado==6.6.1
    # pydantic 2
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    # OpenSlide (the library ships in openslide-bin)
    openslide-python==1.4.7 openslide-bin==4.0.1.2
    # lifelines (autograd-gamma is built below: PyPI has no wheel of 0.5.0)
    lifelines==0.30.3 autograd==1.9.1
    # JPEG coding on the CPU (raw JPEG reads, synthetic slides)
    imagecodecs==2026.3.6
    # GPU JPEG decoding (features.jpeg_decoder / the benchmark's CUDA path), and nvJPEG for CUDA 13.0
    # as torch 2.11+cu130's cuda-toolkit 13.0.2 pins it (nvImageCodec finds it through its RUNPATH)
    nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.0.1.86
    # The image is said to have these; small, and pip uses them only if its own are missing or too
    # old (pydantic-core wants a recent typing-extensions; lifelines needs formulaic).
    typing-extensions==4.16.0 formulaic==1.2.2 interface-meta==2.0.1 wrapt==2.5.2 narwhals==2.29.0
)
sdist_pins=(autograd-gamma==0.5.0)

platform_args=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any)

rm -rf "$dest"
mkdir -p "$dest"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
grep -qxF "/$dest/" "$exclude" || echo "/$dest/" >>"$exclude"

echo "== downloading ${#binary_pins[@]} wheels (CPython 3.12, manylinux x86_64)"
"$python" -m pip download -q --no-deps "${platform_args[@]}" -d "$dest" "${binary_pins[@]}"

echo "== building pure-Python wheels of ${sdist_pins[*]}"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
"$python" -m pip wheel -q --no-deps --no-binary=:all: -w "$build" "${sdist_pins[@]}"
for wheel in "$build"/*.whl; do
    case $wheel in
        *-py3-none-any.whl | *-py2.py3-none-any.whl) mv "$wheel" "$dest/" ;;
        *) echo "not a pure-Python wheel: $wheel" >&2; exit 1 ;;
    esac
done

echo "== slimming nvImageCodec to JPEG decoding under CPython 3.12"
"$python" - "$dest" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

folder = Path(sys.argv[1])
(wheel,) = folder.glob("nvidia_nvimgcodec_cu13-*.whl")
drop = re.compile(
    r"nvimgcodec_impl\.cpython-(?!312-)[0-9]+t?-x86_64-linux-gnu\.so$"  # the other Pythons' modules
    r"|^nvidia/nvimgcodec/(tools|include)/"  # DICOM tools, C headers
    r"|/extensions/lib(opencv|tiff|nvtiff|nvjpeg2k|nvbmp|nvpnm)_ext\.so"  # all but nvJPEG and libjpeg-turbo
)
slim = wheel.with_suffix(".slim")
kept = 0
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
    for info in source.infolist():
        if drop.search(info.filename):
            continue
        data = source.read(info)
        if info.filename.endswith(".dist-info/RECORD"):  # RECORD lists only what the wheel holds
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not drop.search(line.split(",")[0])).encode()
        target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        kept += 1
names = set(zipfile.ZipFile(slim).namelist())
for needed in ("nvidia/nvimgcodec/nvimgcodec_impl.cpython-312-x86_64-linux-gnu.so",
               "nvidia/nvimgcodec/extensions/libnvjpeg_ext.so.0.9.0", "nvidia/nvimgcodec/libnvimgcodec.so.0"):
    if needed not in names:
        sys.exit(f"slimmed nvImageCodec wheel lacks {needed}")
print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB -> {slim.stat().st_size / 2**20:.1f} MiB ({kept} entries)")
slim.replace(wheel)
EOF

echo "== checking: one version of each project"
"$python" - "$dest" <<'EOF'
import collections
import re
import sys
from pathlib import Path

projects = collections.Counter(re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower() for p in Path(sys.argv[1]).glob("*.whl"))
twice = [name for name, count in projects.items() if count > 1]
if twice:
    sys.exit(f"more than one wheel of: {', '.join(twice)}")
print(f"{len(projects)} wheels")
EOF

echo "== sizes (the device tool takes at most $limit_mib MiB: tracked + untracked-not-ignored files + carried paths)"
ls -l "$dest"
"$python" - "$dest" "$limit_mib" <<'EOF'
import os
import subprocess
import sys
from pathlib import Path

folder, limit = Path(sys.argv[1]), float(sys.argv[2])
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        capture_output=True, check=True).stdout.decode().split("\0")
tree = sum(os.lstat(name).st_size for name in set(listed) if name and os.path.lexists(name))
wheels = sum(path.stat().st_size for path in folder.glob("*"))
total = (tree + wheels) / 2**20
print(f"wheels {wheels / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {total:.1f} MiB of {limit:.0f} MiB")
if total > limit - 2:
    sys.exit("too close to the device tool's limit: drop a wheel or slim one")
EOF
