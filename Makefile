# Two commands do everything on a fresh machine:
#   make demo   creates .venv, installs, runs the quick preset end to end (all figures, tables, report)
#   make test   creates .venv, installs, runs the test suite (workflow runs, lint, Slurm when root)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test bench lint paper clean-results gpu-check gpu-check-prepare learning-curves transfer labelled-foams

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch for demo and tests; GPU users install a CUDA build (README).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/quick.yaml
	$(BIN)/snakemake --cores 1 --configfile config/quick.yaml --report results/report.zip
	@echo
	@echo "The study on the alternate realization (results/tables/summary.csv):"
	@cat results/tables/summary.md
	@echo
	@echo "Figures:  results/figures/fig1..fig10 (PNG + PDF); fig11 with make learning-curves"
	@echo "Tables:   results/tables/*.csv"
	@echo "Report:   results/report.zip (unzip, open report.html)"

# How the quick preset's training budgets were chosen: learning curves on the validation realization
# (results/tables/learning_curves.csv, results/figures/fig11_learning_curves.png); ~18 min on 2 cores.
learning-curves: $(STAMP)
	$(BIN)/snakemake learning_curves --cores $(CORES) --configfile config/quick.yaml

# The foam's models and spurious-pore classifier, unchanged, on another structure (ellipsoidal voids,
# docs/phantom.md#the-transfer-structure): results/tables/trust_transfer.csv. Not part of the demo;
# 3 min 18 s on 2 cores after `make demo` (measured 2026-11-30); without it, the foam's models are
# trained first (about 19 min of job time in all).
transfer: $(STAMP)
	$(BIN)/snakemake trust_transfer --cores $(CORES) --configfile config/quick.yaml

# The demo with its spurious-pore classifier fitted on eight extra labelled foams (config/labelled.yaml):
# the demo's outputs, with results/trust/models, the flag lists, trust_validation.csv and fig10 refitted.
# Not part of the demo: 31 min on 2 cores after `make demo` (measured 2026-11-30: 4.7 min of job time
# per foam). `make demo` afterwards refits on train alone again.
labelled-foams: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/quick.yaml config/labelled.yaml
	$(BIN)/snakemake --cores 1 --configfile config/quick.yaml config/labelled.yaml --report results/report.zip

test: $(STAMP)
	$(BIN)/python -m pytest -q -rfEs --durations=10

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

# The quick preset's row reads the timing of the last `make demo` here (run first when missing),
# so that `make bench` itself stays within 20 minutes.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	test -d results/benchmarks || $(MAKE) demo
	$(BIN)/python -m benchmarks.run_all --quick-results .

# The one-call GPU check (README "Check every CUDA path once"). Prepare on a CPU machine (network, venv);
# run on the GPU machine with its own Python (no venv, no network): GPU_PYTHON has torch with CUDA.
GPU_PYTHON ?= python3
GPU_CHECK_PREPARED ?= benchmarks/_work/gpu_prepared
GPU_CHECK_OUT ?= benchmarks/_work/gpu_check

gpu-check-prepare: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check --prepare $(GPU_CHECK_PREPARED)

gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check --out $(GPU_CHECK_OUT) --prepared $(GPU_CHECK_PREPARED)

paper: $(STAMP)
	$(BIN)/snakemake --cores 8 --resources gpu=2

clean-results:
	rm -rf results logs .snakemake resources/multiscale_example
