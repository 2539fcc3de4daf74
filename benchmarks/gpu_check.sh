#!/usr/bin/env bash
# The CUDA path, checked in one run (README "GPU check"): on a machine with CUDA,
#   1. the workflow's extraction loop (benchmarks/extraction.py --loop: extract_to_h5, what the
#      activations job calls), resnet50 at 224 px, bf16 + channels-last, sized to run ~25 s, while
#      nvidia-smi samples GPU utilisation and memory every 200 ms (mean over the loop's window);
#   2. the tiny demo end to end on the CPU, then the same run copied and its forward passes
#      (predict and everything after it) redone with extraction.device: cuda, compared by
#      benchmarks/compare_runs.py (layerwise MMCS, CMCS, image sets);
#   3. patches/s of resnet18, resnet50 and vit_small_patch16_224 at 224 px: fp32 / bf16, with and
#      without channels-last, batch 256 and 1024;
#   4. the same with torch.compile (bf16 + channels-last, batch 256; each model compiles once).
# Steps run in that order, each cut to the time left of a whole-run budget (BUDGET_S, default
# 500 s), so the script ends inside 10 minutes; a step that times out or fails is reported and the
# next one runs. Everything lands in RESULTS (default $OUT if set, else results/gpu_check), at
# most 8 files: summary.txt (the short result), summary.json, extraction.jsonl, compare.json,
# gpu_samples.csv, env.txt, logs.txt.
#
#   benchmarks/gpu_check.sh               # on the GPU machine
#   benchmarks/gpu_check.sh --cpu-smoke   # every step on the CPU at tiny sizes (tests the script)
#
# PYTHON (default .venv/bin/python, else python3) needs the project's requirements; the demo
# step also needs snakemake and celer, and is skipped with a note when snakemake is missing.
# The smoke mode multiplies every step's limit by 5 (a 2-core CPU runs the demo for minutes);
# KEEP_WORK=1 keeps the scratch folder (the demo runs) and prints where it is.
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
SNAKEMAKE=${SNAKEMAKE:-$(dirname "$PYTHON")/snakemake}
[[ -x $SNAKEMAKE ]] || SNAKEMAKE=$(command -v snakemake || true)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
CORES=$(nproc)
WORKERS=$((CORES > 13 ? 12 : (CORES > 2 ? CORES - 1 : 1)))

if ((SMOKE)); then
    DEVICE=cpu BUDGET_S=${BUDGET_S:-3600} SCALE=5
    MODELS=(resnet18) MODES=(fp32 bf16+cl) BATCHES=(16 32) IMAGES=2 REPEAT=1 SECONDS_LOOP=5
    SUSTAINED_MODEL=resnet18 SUSTAINED_BATCH=32 COMPILE_MODELS=(resnet18) COMPILE_BATCH=16
else
    DEVICE=cuda BUDGET_S=${BUDGET_S:-500} SCALE=1
    MODELS=(resnet18 resnet50 vit_small_patch16_224) MODES=(fp32 fp32+cl bf16 bf16+cl) BATCHES=(256 1024)
    IMAGES=64 REPEAT=4 SECONDS_LOOP=25
    SUSTAINED_MODEL=resnet50 SUSTAINED_BATCH=256 COMPILE_MODELS=("${MODELS[@]}") COMPILE_BATCH=256
fi

START=$SECONDS
: >"$RESULTS/logs.txt"
: >"$RESULTS/extraction.jsonl"
printf 'step\tstatus\tseconds\n' >"$WORK/steps.tsv"

# step NAME LIMIT_S CMD...: run CMD with a timeout of min(LIMIT_S, time left), log to logs.txt,
# record ok / timeout / failed (rc) / skipped in steps.tsv; never stops the script.
step() {
    local name=$1 limit=$2 left rc=0 t0=$SECONDS status
    shift 2
    limit=$((limit * SCALE))
    left=$((BUDGET_S - (SECONDS - START)))
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$WORK/steps.tsv"
        echo "== $name: skipped, the budget is spent" | tee -a "$RESULTS/logs.txt"
        return 0
    fi
    echo "== $name (limit ${limit} s): $*" | tee -a "$RESULTS/logs.txt"
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

# ---------------------------------------------------------------- environment, GPU sampler
{
    echo "date: $(date -Is)  host: $(hostname)  cores: $CORES  workers: $WORKERS  smoke: $SMOKE"
    echo "python: $PYTHON  snakemake: ${SNAKEMAKE:-none}"
    "$PYTHON" -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__,
"cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
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

bench() { # bench LIMIT_S NAME extraction.py arguments...
    local limit=$1 name=$2
    shift 2
    step "$name" "$limit" "$PYTHON" benchmarks/extraction.py --loop --device "$DEVICE" --workers "$WORKERS" \
        --json "$RESULTS/extraction.jsonl" "$@"
}

# ---------------------------------------------------------------- 1. sustained loop, sampled
bench 120 sustained --models "$SUSTAINED_MODEL" --modes bf16+cl --batch-sizes "$SUSTAINED_BATCH" \
    --images "$IMAGES" --seconds "$SECONDS_LOOP"

# ---------------------------------------------------------------- 2. the tiny demo, CPU vs device
DEMO_CPU=$WORK/demo_cpu DEMO_DEV=$WORK/demo_dev
if [[ -n $SNAKEMAKE ]]; then
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
    step demo_cpu 200 "$SNAKEMAKE" --snakefile "$REPO/Snakefile" --directory "$DEMO_CPU" \
        --profile "$REPO/profiles/local" --configfile "$DEMO_CPU/cpu.yaml" --cores "$CORES"
    cp -a "$DEMO_CPU" "$DEMO_DEV"
    # the same data and trained models; every forward pass and what follows it done again on the device
    step demo_device 150 "$SNAKEMAKE" --snakefile "$REPO/Snakefile" --directory "$DEMO_DEV" \
        --profile "$REPO/profiles/local" --configfile "$DEMO_DEV/device.yaml" --cores "$CORES" --forcerun predict
    step compare 60 "$PYTHON" benchmarks/compare_runs.py "$DEMO_CPU/results" "$DEMO_DEV/results" \
        --json "$RESULTS/compare.json"
else
    printf 'demo\tskipped (no snakemake for %s)\t0\n' "$PYTHON" >>"$WORK/steps.tsv"
fi

# ---------------------------------------------------------------- 3. three models, eager
bench 150 models --models "${MODELS[@]}" --modes "${MODES[@]}" --batch-sizes "${BATCHES[@]}" \
    --images "$IMAGES" --repeat "$REPEAT"

# ---------------------------------------------------------------- 4. torch.compile
bench 240 compile --models "${COMPILE_MODELS[@]}" --modes bf16+cl+compile --batch-sizes "$COMPILE_BATCH" \
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
