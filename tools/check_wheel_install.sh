#!/usr/bin/env bash
# End-to-end check of a wheel install (issue 7: "a wheel built from the repo, installed in a
# fresh venv, runs the demo from another folder").
#
#   1. builds a wheel from a copy of the repository's files (so no build/ or egg-info lands in
#      the working tree) into a temporary folder outside the repository;
#   2. makes a fresh venv there; installs torch + torchvision from PyTorch's CPU-only index when
#      it answers (what the README tells users without a GPU to do), else from the configured
#      index (PyPI: on Linux that is the multi-GB CUDA build); then the wheel with its
#      dependencies, and checks that it kept that torch;
#   3. from an empty folder outside the repository, writes a manifest that names the packaged
#      preset (`workflow: demo`) with the cohort of data_manifests/demo.yaml, runs
#      `wsi-pipeline run manifest.yaml` and checks: exit 0, run.json status "ok", the package
#      and the preset both come from the venv's site-packages (not the repository),
#      metrics.json has an AUC for every model of the preset;
#   4. prints each step's time and a final PASS/FAIL line; exits non-zero on failure; removes
#      its temporary folder unless --keep.
#
# Usage: tools/check_wheel_install.sh [--small] [--keep] [--from-head] [--torch-index URL | --pypi-torch]
#   --small          a 12-patient cohort of 1536² slides instead of the real demo (quick check)
#   --keep           keep the temporary folder (wheel, venv, run outputs, logs)
#   --from-head      build from the last commit (git archive HEAD) instead of the working tree
#   --torch-index U  index to take torch/torchvision from (default: PyTorch's CPU-only index)
#   --pypi-torch     take torch/torchvision from the configured index (PyPI) without trying U
# Environment: PYTHON (default python3) makes the venv and builds the wheel; TMPDIR is where
# the temporary folder goes.
set -euo pipefail

# Decimal points in $EPOCHREALTIME and printf are '.' whatever the user's locale.
export LC_NUMERIC=C

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

SMALL=0
KEEP=0
FROM_HEAD=0
TORCH_INDEX=https://download.pytorch.org/whl/cpu
while (($#)); do
    case $1 in
        --small) SMALL=1 ;;
        --keep) KEEP=1 ;;
        --from-head) FROM_HEAD=1 ;;
        --torch-index) TORCH_INDEX=${2:?--torch-index needs a URL}; shift ;;
        --pypi-torch) TORCH_INDEX= ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PYTHON=${PYTHON:-python3}
# The installed package must be found on its own: nothing may point Python back at the repo.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYTHONSTARTUP
export PIP_DISABLE_PIP_VERSION_CHECK=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wsi-wheel-check.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
case $WORK/ in
    "$REPO"/*) echo "the temporary folder $WORK is inside the repository; set TMPDIR elsewhere" >&2
               rm -rf "$WORK"; exit 2 ;;
esac
SRC=$WORK/src          # copy of the repository's files the wheel is built from
DIST=$WORK/dist        # the wheel
VENV=$WORK/venv        # the fresh venv
DEMO=$WORK/demo        # the empty folder the demo runs from
LOGS=$WORK/logs        # output of pip and of the run
mkdir -p "$SRC" "$DIST" "$DEMO" "$LOGS"

# --- step timing, results, and the PASS/FAIL line ---------------------------------------------

now_ms() {  # milliseconds since the epoch (bash 5's $EPOCHREALTIME; whole seconds before it)
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo $((10#$t / 1000))
    else
        echo $(($(date +%s) * 1000))
    fi
}
seconds_since() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }

STEP=""            # the step running now (named in the FAIL line)
STEP_T0=0
STEP_LOG=""        # its log, whose end is shown when it fails
STEPS=()           # "name<TAB>seconds" of each finished step
RESULTS=()         # measured facts, printed at the end
FAIL_REASON=""
PASSED=0
T_START=$(now_ms)

step() { STEP=$1; STEP_LOG=${2:-}; STEP_T0=$(now_ms); echo; echo "==> $STEP"; }
step_done() {
    local s; s=$(seconds_since "$STEP_T0")
    STEPS+=("$STEP"$'\t'"$s"); echo "    done in ${s}s"; STEP=""; STEP_LOG=""
}
result() { RESULTS+=("$1"); echo "    $1"; }
fail() { FAIL_REASON=$1; exit 1; }
# Run a command with its output in a log (shown in part on failure).
logged() { local log=$1; shift; echo "    \$ $*" >"$log"; "$@" >>"$log" 2>&1; }

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc != 0)) && [[ -n $STEP_LOG && -f $STEP_LOG ]]; then
        echo; echo "--- last lines of $STEP_LOG ---"; tail -n 40 "$STEP_LOG"; echo "---"
    fi
    echo
    echo "Step timings:"
    local entry
    for entry in "${STEPS[@]}"; do printf '  %-44s %8ss\n' "${entry%%$'\t'*}" "${entry#*$'\t'}"; done
    [[ -n $STEP ]] && printf '  %-44s %8ss (unfinished)\n' "$STEP" "$(seconds_since "$STEP_T0")"
    printf '  %-44s %8ss\n' "total" "$(seconds_since "$T_START")"
    if ((${#RESULTS[@]})); then
        echo "Results:"
        for entry in "${RESULTS[@]}"; do echo "  $entry"; done
    fi
    if ((KEEP)); then echo "Kept: $WORK"; else rm -rf "$WORK"; fi
    if ((rc == 0 && PASSED)); then
        echo "PASS: wheel install runs the demo from another folder$( ((SMALL)) && echo ' (--small cohort)')"
    else
        ((rc == 0)) && rc=1
        echo "FAIL: ${STEP:-after the last step}: ${FAIL_REASON:-a command failed (exit $rc)}"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'FAIL_REASON="interrupted"; exit 130' INT TERM

echo "repository: $REPO"
echo "work folder: $WORK$( ((KEEP)) || echo ' (removed at the end; --keep keeps it)')"

# --- 1. the wheel -------------------------------------------------------------------------------

step "build the wheel" "$LOGS/build.log"
# Build from a copy of the files git would commit (tracked, or untracked and not ignored; with
# local edits): setuptools writes build/ and *.egg-info into the folder it builds, and the
# working tree is shared. Outside a git checkout, copy everything but the usual clutter.
# --from-head: the last commit only, without anyone's uncommitted edits.
if ((FROM_HEAD)); then
    git -C "$REPO" archive HEAD | tar -C "$SRC" -xf -
    echo "    source: commit $(git -C "$REPO" rev-parse --short HEAD)"
elif git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "    source: the working tree (tracked and untracked files, with uncommitted edits)"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard) |
        while IFS= read -r -d '' f; do
            # Files deleted in the working tree are still listed as tracked: skip them.
            if [[ -e $REPO/$f || -L $REPO/$f ]]; then printf '%s\0' "$f"; fi
        done |
        tar -C "$REPO" --null -T - -cf - | tar -C "$SRC" -xf -
else
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=runs --exclude='*.egg-info' \
        --exclude=build --exclude=__pycache__ -cf - . | tar -C "$SRC" -xf -
fi
logged "$LOGS/build.log" "$PYTHON" -m pip wheel --no-deps -w "$DIST" "$SRC" || fail "pip wheel failed"
WHEELS=("$DIST"/wsi_pipeline-*.whl)
[[ -f ${WHEELS[0]} ]] || fail "no wsi_pipeline wheel in $DIST"
WHEEL=${WHEELS[0]}
# The presets must be inside the wheel, or a name like `workflow: demo` finds nothing.
"$PYTHON" - "$WHEEL" <<'EOF' || fail "the wheel lacks files it needs (above)"
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ["wsi_pipeline/__init__.py", "wsi_pipeline/cli/main.py",
          "wsi_pipeline/workflows/demo.yaml", "wsi_pipeline/workflows/respred_uc.yaml"]
missing = [n for n in needed if n not in names]
entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
if not entry_points:
    missing.append("*.dist-info/entry_points.txt (the wsi-pipeline command)")
for name in missing:
    print(f"    missing from the wheel: {name}")
sys.exit(1 if missing else 0)
EOF
result "wheel: $(basename "$WHEEL"), $(du -k "$WHEEL" | cut -f1) KiB ($(stat -c %s "$WHEEL") bytes)"
step_done

# --- 2. a fresh venv with torch, then the wheel -------------------------------------------------

step "create a fresh venv" "$LOGS/venv.log"
logged "$LOGS/venv.log" "$PYTHON" -m venv "$VENV" || fail "python -m venv failed"
VPY=$VENV/bin/python
result "venv: $("$VPY" -c 'import sys; print(sys.version.split()[0])') at $VENV"
step_done

step "install torch + torchvision" "$LOGS/torch.log"
# Is PyTorch's CPU index reachable? Asked with Python, which honours the proxy variables.
torch_from=""
if [[ -n $TORCH_INDEX ]] && "$VPY" - "$TORCH_INDEX" <<'EOF'; then
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=15).close()
except Exception as error:
    print(f"    {sys.argv[1]} not reachable ({error}); torch comes from the configured index")
    sys.exit(1)
EOF
    torch_from=$TORCH_INDEX
    logged "$LOGS/torch.log" "$VPY" -m pip install torch torchvision --index-url "$TORCH_INDEX" ||
        fail "installing torch from $TORCH_INDEX failed"
else
    torch_from="the configured index (PyPI)"
    logged "$LOGS/torch.log" "$VPY" -m pip install torch torchvision || fail "installing torch failed"
fi
# Which build, and its size on disk: torch, torchvision and the CUDA libraries that came with it.
TORCH_BEFORE=$("$VPY" -c 'import torch; print(torch.__version__)')
TORCH_FACTS=$("$VPY" - <<'EOF'
from importlib import metadata
import torch
total = 0
for dist in metadata.distributions():
    name = (dist.metadata["Name"] or "").lower()
    if name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-")):
        total += sum(f.locate().stat().st_size for f in dist.files or () if f.locate().is_file())
variant = "CPU" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
print(f"torch {torch.__version__} ({variant} build), torchvision {metadata.version('torchvision')}, "
      f"{total / 2**20:,.0f} MiB on disk with its libraries")
EOF
)
result "torch from $torch_from: $TORCH_FACTS"
step_done

step "install the wheel and its dependencies" "$LOGS/wheel.log"
logged "$LOGS/wheel.log" "$VPY" -m pip install "$WHEEL" || fail "pip install of the wheel failed"
TORCH_AFTER=$("$VPY" -c 'import torch; print(torch.__version__)')
[[ $TORCH_AFTER == "$TORCH_BEFORE" ]] ||
    fail "installing the wheel replaced torch $TORCH_BEFORE with $TORCH_AFTER"
[[ -x $VENV/bin/wsi-pipeline ]] || fail "the wheel installed no wsi-pipeline command"
step_done

# --- 3. the demo from an empty folder outside the repository ------------------------------------

step "check where the package comes from"
cd "$DEMO"
# Both must be in the venv's site-packages: a path into the repository means the check is void.
"$VPY" - "$REPO" <<'EOF' || fail "wsi_pipeline is not imported from the venv's site-packages"
import sys, sysconfig
from pathlib import Path
import wsi_pipeline
from wsi_pipeline.config.loader import package_presets
site = Path(sysconfig.get_paths()["purelib"]).resolve()
repo = Path(sys.argv[1]).resolve()
ok = True
for what, path in (("wsi_pipeline", Path(wsi_pipeline.__file__)), ("packaged presets", package_presets())):
    path = path.resolve()
    good = path.is_relative_to(site) and not path.is_relative_to(repo)
    ok &= good
    print(f"    {what}: {path}{'' if good else '  <-- not in ' + str(site)}")
sys.exit(0 if ok else 1)
EOF
step_done

step "write the manifest"
# The cohort (and cluster, seed) of data_manifests/demo.yaml, read now so the two stay the same;
# the workflow named, so it must come from the installed package.
"$VPY" - "$REPO/data_manifests/demo.yaml" manifest.yaml "$SMALL" <<'EOF' || fail "could not write the manifest"
import sys, yaml
source, target, small = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
demo = yaml.safe_load(open(source, encoding="utf-8"))
if demo.get("workflow") != "demo" or "synthetic" not in (demo.get("cohort") or {}):
    sys.exit(f"    {source} is no longer the synthetic demo (workflow {demo.get('workflow')!r}): update this script")
manifest = {"workflow": "demo", **{k: v for k, v in demo.items() if k not in ("workflow", "output")}, "output": "run"}
if small:
    manifest["cohort"]["synthetic"].update(n_patients=12, positive_fraction=0.5, width=1536, height=1536, n_levels=3)
with open(target, "w", encoding="utf-8") as out:
    yaml.safe_dump(manifest, out, sort_keys=False)
EOF
sed 's/^/    /' manifest.yaml
step_done

step "run the demo: wsi-pipeline run manifest.yaml" "$LOGS/run.log"
set +e
PATH=$VENV/bin:$PATH wsi-pipeline run manifest.yaml 2>&1 | tee "$LOGS/run.log" | sed 's/^/    | /'
run_rc=${PIPESTATUS[0]}
set -e
((run_rc == 0)) || fail "wsi-pipeline run exited $run_rc"
result "demo run: exit 0 in $(seconds_since "$STEP_T0") s (wall time of the command, Python start-up included)"
step_done

step "check the run's outputs" "$LOGS/check.log"
"$VPY" - "$DEMO/run" "$REPO" <<'EOF' 2>&1 | tee "$LOGS/check.log" || fail "the run's outputs are not as expected (above)"
import json, sys, sysconfig
from pathlib import Path
run, repo = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
site = Path(sysconfig.get_paths()["purelib"]).resolve()
errors = []
record = json.loads((run / "run.json").read_text(encoding="utf-8"))
if record.get("status") != "ok":
    errors.append(f"run.json status is {record.get('status')!r}, not 'ok'")
preset = Path(record["config"]["preset_path"]).resolve()
print(f"    preset used: {preset}")
if not preset.is_relative_to(site) or preset.is_relative_to(repo):
    errors.append(f"the preset did not come from the installed package: {preset}")
counts = ", ".join(f"{stage} " + "/".join(f"{n} {status}" for status, n in c.items() if n)
                   for stage, c in (record.get("counts") or {}).items())
stages = ", ".join(f"{stage} {s:.0f}" for stage, s in (record.get("timings_seconds") or {}).items())
print(f"    run.json: status {record.get('status')!r}, wall {record.get('wall_seconds'):.1f} s "
      f"(stages, s: {stages}; tile and extract overlap); items: {counts}")
metrics_file = run / "metrics.json"
models = record["config"]["workflow"]["model"]["aggregators"]
if not metrics_file.is_file():
    errors.append(f"no {metrics_file}")
else:
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    for model in models:
        auc = metrics.get(model, {}).get("auc", {})
        if not isinstance(auc.get("value"), (int, float)):
            errors.append(f"metrics.json has no AUC for {model}")
            continue
        entry = metrics[model]
        ci = "" if auc.get("ci_low") is None else f" [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]"
        print(f"    AUC {model}: {auc['value']:.3f}{ci}, "
              f"{entry.get('n_patients')} patients, {entry.get('n_positive')} positive")
for error in errors:
    print(f"    ERROR: {error}")
sys.exit(1 if errors else 0)
EOF
while IFS= read -r line; do
    case $line in *"AUC "* | *"run.json: "*) RESULTS+=("${line#    }") ;; esac
done <"$LOGS/check.log"
step_done

PASSED=1
