# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install ltaug, run the whole workflow on the demo data
#   make test   create .venv, install ltaug, run the tests (all but the slow tier and the SLURM cluster test)
#   make test-slow    the tests make test leaves out: the slow tier and the SLURM cluster test (CI runs both targets)
#   make test-slurm   the SLURM cluster test alone (root and apt-get)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all
PYTEST_ARGS ?=
PYTEST_MARK ?= not slurm and not slow
# rules run `python -m ltaug ...`: the environment's python comes first on PATH
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: demo ablation test test-slow test-slurm env lint clean

env: $(STAMP)

# torch and torchvision first, by exact version, so pip takes the builds on this machine's disk
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

# Without CUDA every stage runs on the CPU cores that --cores shares out and the gpu resource guards
# nothing, so the demo lifts it there, and every stage after the VAE runs on one core, two jobs at a
# time on two cores: a second thread speeds a UNet training step up by 1.07x and a DenseNet step (in
# channels-last) by 1.1-1.3x, and two one-thread DenseNet processes do 1.7x the steps of one on two
# threads (benchmarks/memory_format.py). The UNet then trains beside the encoding, iterated learning,
# CAMs, fusion and the baselines' classifiers, which read only the VAE or the images. The VAE, which a
# second thread speeds up 1.4-1.8x and which nothing can run beside, keeps both.
ONE_CORE_RULES := bootstrap_unet=1 encode_latents=1 train_il=1 cam_maps=1 pair_neighbours=1 fuse=1 \
	generate=1 baseline_smote=1 baseline_roentgen=1 evaluate_classifier=1 evaluate_fid=1 real_features=1 train_judge=1 \
	fidelity_funnel=1

SCHEDULE = if $(BIN)/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
	  schedule="--resources gpu=1"; \
	else schedule="--resources gpu=$$(nproc) --set-threads $(ONE_CORE_RULES)"; fi

demo: $(STAMP)
	$(SCHEDULE); $(BIN)/snakemake --cores $(CORES) $$schedule --configfile config.yaml
	$(BIN)/snakemake --configfile config.yaml --report results/report.html
	@cat results/report/table1.md
	@echo "Report: $(abspath results/report.html) (tables and figures in results/report/)"

# The demo with the ablation's rows in Table 1 (ablation.yaml: which part of the method matters); what the demo has
# already built is reused
ablation: $(STAMP)
	$(SCHEDULE); $(BIN)/snakemake --cores $(CORES) $$schedule --configfile config.yaml ablation.yaml
	$(BIN)/snakemake --configfile config.yaml ablation.yaml --report results/report.html
	@cat results/report/table1.md
	@echo "Report: $(abspath results/report.html) (tables and figures in results/report/)"

# pytest exits 5 when it collects no test (e.g. a -k that matches nothing): said, not failed
test: $(STAMP)
	$(BIN)/python -m pytest -m "$(PYTEST_MARK)" $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)" >&2; rc=0; fi; exit $$rc

# the slow tier (each test a minute or so beyond the tiny reference run) and the SLURM cluster test, in one session:
# the tiny reference run that both compare with is made once
test-slow: $(STAMP)
	$(MAKE) test PYTEST_MARK="slow or slurm" PYTEST_ARGS="$(PYTEST_ARGS)"

# the single-node SLURM cluster test: installs slurm-wlm and munge with apt-get (skipped without root)
test-slurm: $(STAMP)
	$(MAKE) test PYTEST_MARK=slurm PYTEST_ARGS="$(PYTEST_ARGS)"

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs benchmarks/*/ .snakemake
