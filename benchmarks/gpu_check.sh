#!/usr/bin/env bash
# The CUDA path, checked in one run (docs/gpu.md): on a machine with CUDA,
#   0. the carried wheels (.whl/, made here by benchmarks/gpu_wheels.py: snakemake, celer and what
#      they need that the device lacks) installed with pip --no-index --no-deps --target into a
#      scratch folder (WHEEL_SITE), which goes on PYTHONPATH;
#   1. the workflow's extraction loop (benchmarks/extraction.py --loop: extract_to_h5, what the
#      activations job calls), resnet50 at 224 px, bf16 + channels-last, sized to run ~20 s, while
#      nvidia-smi samples GPU utilisation and memory every 200 ms (mean over the loop's window);
#   2. the paper's settings (every ReLU + pre_logits hooked and pooled, 16 patches of 64 px resized
#      to 224 px): resnet18, resnet50 and vit_small_patch16_224, bf16 + channels-last, batch 256 and
#      1024: the rates the projected GPU time of the RN18-vs-RN50 1000-class run comes from;
#   3. the tiny demo end to end on the CPU, then the same run copied and its forward passes
#      (predict and everything after it) redone with extraction.device: cuda, compared by
#      benchmarks/compare_runs.py (layerwise MMCS, CMCS, image sets);
#   4. step 2's resnets with extraction.compile (torch.compile; one compile per model and batch size);
#   5. the three models in fp32 + channels-last, batch 256 (the float32 reference).
# Steps run in that order (what the issue checks first), each cut to the time left of a whole-run
# budget (BUDGET_S, default 420 s, so that with the machine's start the run stays inside 9 minutes
# of device time); the plan (each step's limit) is printed first; a step that times out or fails
# is reported and the next one runs. STEPS (default "wheels sustained paper demo compile fp32")
# picks steps for a rerun. Everything lands in RESULTS (default $OUT if set, else
# results/gpu_check), at most 8 files: summary.txt (the short result and the projected 1000-class
# GPU time), summary.json, extraction.jsonl, compare.json, gpu_samples.csv, env.txt, logs.txt.
#
#   benchmarks/gpu_check.sh               # on the GPU machine (docs/gpu.md: the device call)
#   benchmarks/gpu_check.sh --cpu-smoke   # every step on the CPU at tiny sizes (tests the script)
#
# PYTHON (default .venv/bin/python, else python3) needs the project's requirements, or the device
# image's packages plus the wheels of .whl/; the demo step needs snakemake and is skipped, with a
# note, when there is none. The smoke mode multiplies every step's limit by 5 (a 2-core CPU runs
# the demo for minutes); KEEP_WORK=1 keeps the scratch folder (the demo runs, the installed wheels).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
SMOKE=0
if [[ ${1:-} == "--cpu-smoke" ]]; then
    SMOKE=1
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--cpu-smoke]" >&2
    exit 2
fi

RESULTS=${RESULTS:-${OUT:-results/gpu_check}}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEEL_SITE=${WHEEL_SITE:-$WORK/site}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
CORES=$(nproc)
WORKERS=$((CORES > 13 ? 12 : (CORES > 2 ? CORES - 1 : 1)))

if ((SMOKE)); then
    DEVICE=cpu BUDGET_S=${BUDGET_S:-3600} SCALE=5
    PAPER_MODELS=(resnet50 resnet18) BATCHES=(16 32) IMAGES=2 REPEAT=1 SECONDS_LOOP=5
    SUSTAINED_MODEL=resnet18 SUSTAINED_BATCH=32 COMPILE_MODELS=(resnet18) COMPILE_BATCHES=(16)
else
    DEVICE=cuda BUDGET_S=${BUDGET_S:-420} SCALE=1
    PAPER_MODELS=(resnet50 resnet18) BATCHES=(256 1024) IMAGES=64 REPEAT=4 SECONDS_LOOP=20
    SUSTAINED_MODEL=resnet50 SUSTAINED_BATCH=256 COMPILE_MODELS=(resnet50 resnet18) COMPILE_BATCHES=(256 1024)
fi
VIT=vit_small_patch16_224
STEPS=" ${STEPS:-wheels sustained paper demo compile fp32} "
want() { [[ $STEPS == *" $1 "* ]]; }
# each step's limit in seconds (x SCALE), cut to what is left of BUDGET_S when it starts
declare -A LIMIT=([wheels]=45 [sustained]=75 [paper]=75 [demo_cpu]=180 [demo_device]=120 [compare]=30
    [compile]=180 [fp32]=60)

START=$SECONDS
{
    echo "plan: ${BUDGET_S} s in all (BUDGET_S); steps:$STEPS; each step's limit, cut to the time left:"
    for s in wheels sustained paper demo_cpu demo_device compare compile fp32; do
        group=$s
        [[ $s == demo_* || $s == compare ]] && group=demo
        if want "$group"; then printf '  %-12s %5d s\n' "$s" $((LIMIT[$s] * SCALE)); fi
    done
} | tee "$RESULTS/logs.txt"
: >"$RESULTS/extraction.jsonl"
printf 'step\tstatus\tseconds\n' >"$WORK/steps.tsv"

# step NAME CMD...: run CMD with a timeout of min(LIMIT[NAME] x SCALE, time left), log to logs.txt,
# record ok / timeout / failed (rc) / skipped in steps.tsv; never stops the script.
step() {
    local name=$1 limit=${LIMIT[$1]} left rc=0 t0=$SECONDS status cmd
    shift
    limit=$((limit * SCALE))
    left=$((BUDGET_S - (SECONDS - START)))
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$WORK/steps.tsv"
        echo "== $name: skipped, the budget is spent" | tee -a "$RESULTS/logs.txt"
        return 0
    fi
    cmd="$*"
    ((${#cmd} > 300)) && cmd="${cmd:0:300} ..."
    echo "== $name (limit ${limit} s, $((SECONDS - START)) s of ${BUDGET_S} s spent): $cmd" | tee -a "$RESULTS/logs.txt"
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    tail -n 60 "$WORK/$name.log" | grep -v '%|' >>"$RESULTS/logs.txt" || true
    case $rc in
        0) status=ok ;;
        124 | 137) status="timeout after ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%d\n' "$name" "$status" $((SECONDS - t0)) >>"$WORK/steps.tsv"
    echo "== $name: $status ($((SECONDS - t0)) s)" | tee -a "$RESULTS/logs.txt"
}

SAMPLER=
cleanup() {
    if [[ -n $SAMPLER ]]; then kill "$SAMPLER" 2>/dev/null || true; fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "scratch kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 0. the carried wheels
# pip --target into an empty folder: nothing of the image's own packages is touched, and no second
# copy of one comes along (benchmarks/gpu_wheels.py leaves out what the device has)
if want wheels && "$PYTHON" -c 'import snakemake, celer' 2>/dev/null; then
    printf 'wheels\tskipped (%s imports snakemake and celer already)\t0\n' "$PYTHON" >>"$WORK/steps.tsv"
elif want wheels && compgen -G ".whl/*.whl" >/dev/null; then
    mkdir -p "$WHEEL_SITE"
    step wheels "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WHEEL_SITE" \
        .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$WHEEL_SITE"
elif want wheels; then
    printf 'wheels\tskipped (no .whl/ here: make gpu-wheels, then carry .whl)\t0\n' >>"$WORK/steps.tsv"
fi
SNAKEMAKE=()
if [[ -x $(dirname "$PYTHON")/snakemake ]]; then
    SNAKEMAKE=("$(dirname "$PYTHON")/snakemake")
elif "$PYTHON" -c 'import snakemake' 2>/dev/null; then
    SNAKEMAKE=("$PYTHON" -m snakemake)
fi

# ---------------------------------------------------------------- environment, GPU sampler
{
    echo "date: $(date -Is)  host: $(hostname)  cores: $CORES  workers: $WORKERS  smoke: $SMOKE"
    echo "python: $PYTHON  snakemake: ${SNAKEMAKE[*]:-none}  PYTHONPATH: $PYTHONPATH"
    "$PYTHON" - <<'PY'
import importlib

import torch

for name in ("snakemake", "celer", "torch", "timm", "h5py", "sklearn", "pandas", "seaborn"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:10s} {getattr(mod, '__version__', '?'):14s} {mod.__file__}")
    except Exception as e:  # noqa: BLE001 - reported, the step that needs it says more
        print(f"{name:10s} not importable: {e}")
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
    if [[ -d $WHEEL_SITE ]]; then "$PYTHON" benchmarks/gpu_wheels.py unmet --site "$WHEEL_SITE"; fi
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
} >"$RESULTS/env.txt" 2>&1 || true
if ((!SMOKE)) && ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "CUDA is not available to $PYTHON: nothing to check (see $RESULTS/env.txt)" | tee "$RESULTS/summary.txt"
    exit 1
fi
: >"$RESULTS/gpu_samples.csv"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
        >"$RESULTS/gpu_samples.csv" 2>/dev/null &
    SAMPLER=$!
fi

bench() { # bench NAME extraction.py arguments...
    local name=$1
    shift
    want "$name" || return 0
    step "$name" "$PYTHON" benchmarks/extraction.py --loop --device "$DEVICE" --workers "$WORKERS" \
        --json "$RESULTS/extraction.jsonl" "$@"
}

# ---------------------------------------------------------------- 1. sustained loop, sampled
bench sustained --models "$SUSTAINED_MODEL" --modes bf16+cl --batch-sizes "$SUSTAINED_BATCH" \
    --images "$IMAGES" --seconds "$SECONDS_LOOP"

# ---------------------------------------------------------------- 2. the paper's settings, eager
bench paper --models "${PAPER_MODELS[@]}" "$VIT" --modes bf16+cl --batch-sizes "${BATCHES[@]}" \
    --images "$IMAGES" --repeat "$REPEAT"

# ---------------------------------------------------------------- 3. the tiny demo, CPU vs device
DEMO_CPU=$WORK/demo_cpu DEMO_DEV=$WORK/demo_dev
if want demo && ((${#SNAKEMAKE[@]})); then
    mkdir -p "$DEMO_CPU"
    "$PYTHON" - "$DEMO_CPU" "$DEVICE" <<'EOF'
import sys
from pathlib import Path

import yaml

sys.path.insert(0, "tests")
from conftest import tiny_config  # the test suite's tiny demo (3 classes, 64 px, k = 5)

out, device = Path(sys.argv[1]), sys.argv[2]
cfg = tiny_config(yaml.safe_load(Path("config.yaml").read_text()))
for name, dev in (("cpu", "cpu"), ("device", device)):
    cfg["extraction"]["device"] = dev
    (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
EOF
    # the local profile: its gpu_jobs semaphore lets one forward-pass job use the GPU at a time
    step demo_cpu "${SNAKEMAKE[@]}" --snakefile "$REPO/Snakefile" --directory "$DEMO_CPU" \
        --profile "$REPO/profiles/local" --configfile "$DEMO_CPU/cpu.yaml" --cores "$CORES"
    cp -a "$DEMO_CPU" "$DEMO_DEV"
    # the same data and trained models; every forward pass and what follows it done again on the device
    step demo_device "${SNAKEMAKE[@]}" --snakefile "$REPO/Snakefile" --directory "$DEMO_DEV" \
        --profile "$REPO/profiles/local" --configfile "$DEMO_DEV/device.yaml" --cores "$CORES" --forcerun predict
    step compare "$PYTHON" benchmarks/compare_runs.py "$DEMO_CPU/results" "$DEMO_DEV/results" \
        --json "$RESULTS/compare.json"
elif want demo; then
    printf 'demo\tskipped (no snakemake for %s: make gpu-wheels, carry .whl)\t0\n' "$PYTHON" >>"$WORK/steps.tsv"
fi

# ---------------------------------------------------------------- 4. torch.compile
bench compile --models "${COMPILE_MODELS[@]}" --modes bf16+cl+compile --batch-sizes "${COMPILE_BATCHES[@]}" \
    --images "$IMAGES" --repeat "$REPEAT"

# ---------------------------------------------------------------- 5. float32 reference
bench fp32 --models "${PAPER_MODELS[@]}" "$VIT" --modes fp32+cl --batch-sizes "${BATCHES[0]}" \
    --images "$IMAGES" --repeat "$REPEAT"

# ---------------------------------------------------------------- summary
if [[ -n $SAMPLER ]]; then
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=
fi
"$PYTHON" benchmarks/gpu_check_summary.py "$RESULTS" --steps "$WORK/steps.tsv" --sustained-model "$SUSTAINED_MODEL" \
    --total-seconds $((SECONDS - START))
cat "$RESULTS/summary.txt"
