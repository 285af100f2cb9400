# cnnstudy: `make` lists the targets. Every target sets up .venv itself.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ATLAS ?= experiments/atlas.toml
EXP ?= experiments/default.toml
ARGS ?=
PORT ?= 5000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export TF_CPP_MIN_LOG_LEVEL ?= 3
# The Keras backend of every target. PyTorch trains this project's small CNNs faster than
# TensorFlow on a CPU (`make bench` measures all three side by side); TensorFlow stays
# installed, and `KERAS_BACKEND=tensorflow make ...` uses it.
export KERAS_BACKEND ?= torch
# PyTorch's CPU build. A bare `torch` requirement makes pip fetch a CUDA build of several GB.
TORCH ?= torch==2.13.0
export PYTHONUNBUFFERED := 1

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first run installs TensorFlow, keras-tuner, MLflow: a few minutes)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: help
help: ## list the targets
	@echo "cnnstudy: which CNN design choice wins? (padding; max/avg pool vs stride)"
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "  variables: EXP=experiments/<study>.toml (default $(EXP)), ARGS='--set study.seeds=1'"

.PHONY: install
install: $(BIN)/.installed ## create .venv and install cnnstudy (the other targets do this too)

.PHONY: sweep
sweep: $(BIN)/.installed ## tune + replicate every variant of EXP, logging to MLflow (WORKERS=n: distributed)
	$(BIN)/cnnstudy sweep $(EXP) $(ARGS) $(if $(WORKERS),--workers $(WORKERS))

.PHONY: report
report: $(BIN)/.installed ## write results/<study>/report.{html,md} from the latest sweep in MLflow
	$(BIN)/cnnstudy report $(EXP) $(ARGS)

.PHONY: atlas
atlas: $(BIN)/.installed ## sweep + report every study of experiments/atlas.toml, pool them -> results/atlas/
	$(BIN)/cnnstudy atlas $(ATLAS)

.PHONY: shapes
shapes: $(BIN)/.installed ## print every variant's layer shapes, params and MACs
	$(BIN)/cnnstudy shapes $(EXP) $(ARGS)

.PHONY: bench
bench: $(BIN)/.installed ## harness overhead, images/s per variant and backend, scaling -> results/bench/
	$(BIN)/python -m cnnstudy.bench $(EXP)

.PHONY: bench-gpu
bench-gpu: $(BIN)/.installed ## on a GPU: images/s, MFU, overhead per variant and precision -> results/bench/gpu-*
	$(BIN)/python -m cnnstudy.bench_gpu $(if $(filter command line environment,$(origin EXP)),$(EXP)) $(ARGS)

.PHONY: ui
ui: $(BIN)/.installed ## serve the MLflow UI on http://127.0.0.1:5000 (PORT=n for another port)
	$(BIN)/cnnstudy ui --port $(PORT)

.PHONY: test
test: $(BIN)/.installed ## run the fast test suite under KERAS_BACKEND (slow tests excluded; in CI also test-backends)
	$(BIN)/python -m pytest -q
	@if [ "$$CI" = "true" ]; then $(MAKE) --no-print-directory test-backends; fi

BACKENDS ?= tensorflow jax
BVENV := .venv-backends
$(BVENV)/.installed: pyproject.toml
	@test -x $(BVENV)/bin/python || $(PYTHON) -m venv $(BVENV)
	@echo "setting up $(BVENV) with keras backends: $(BACKENDS)"
	$(BVENV)/bin/python -m pip install --quiet --upgrade pip
	$(BVENV)/bin/python -m pip install --quiet '$(TORCH)'
	$(BVENV)/bin/python -m pip install --quiet -e '.[dev]' $(filter-out tensorflow torch,$(BACKENDS))
	@touch $@

.PHONY: test-backends
test-backends: $(BVENV)/.installed ## smoke sweep under each KERAS_BACKEND in BACKENDS (default: tensorflow jax)
	@for b in $(BACKENDS); do \
	  $(BVENV)/bin/python -c "import $$b" >/dev/null 2>&1 || $(BVENV)/bin/python -m pip install -q $$b; \
	  echo "== KERAS_BACKEND=$$b"; \
	  KERAS_BACKEND=$$b $(BVENV)/bin/python -m pytest -q -m backends tests/test_backends.py || exit 1; \
	done

.PHONY: test-slow
test-slow: $(BIN)/.installed ## run only the slow tests (real training)
	$(BIN)/python -m pytest -q -m slow

.PHONY: e2e
e2e: $(BIN)/.installed ## real-browser checks (headless Chromium): MLflow UI and report; saves screenshots
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	CNNSTUDY_E2E_REQUIRED=1 CNNSTUDY_SCREENSHOTS=$(CURDIR)/results/screenshots $(BIN)/python -m pytest -q -m e2e tests/test_e2e.py

.PHONY: lint
lint: $(BIN)/.installed ## ruff check
	$(BIN)/ruff check cnnstudy tests

.PHONY: clean
clean: ## remove generated state: MLflow store, artifacts, tuner state (keeps .venv, results/)
	rm -rf mlflow.db mlartifacts mlruns .cnnstudy .pytest_cache
