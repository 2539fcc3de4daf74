# Two entry points: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2

.PHONY: demo test test-slow venv report lint gpu-wheels

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: venv
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)

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
