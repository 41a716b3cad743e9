# ae-denoise: every target creates what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# The container engine of these machines (docs/deployment.md); any other Docker engine works too.
ENGINE := bash ../shared/tools/container-engine

# onnxruntime's Linux wheels would otherwise persist a device id and try to upload usage events.
export ORT_DISABLE_TELEMETRY ?= 1

.PHONY: help install install-dev system-deps serve test test-containers lint typecheck bench \
        image compose-up compose-down engine ray-up ray-down clean

help:
	@echo "make serve            install the service and serve the shipped models on $(HOST):$(PORT)"
	@echo "make test             install everything the tests need and run the whole suite"
	@echo "make lint             ruff, mypy, hadolint"
	@echo "make bench            run the benchmarks (see docs/benchmarks.md)"
	@echo "make image            build the service image (docker build)"
	@echo "make compose-up       build and start the compose stack on 127.0.0.1:8000, wait until healthy"
	@echo "make compose-down     stop it"
	@echo "make test-containers  start this machine's container engine and run the container tests"
	@echo "make ray-up           start a 3-node Ray cluster on loopback and deploy deploy/ray/serve.yaml"
	@echo "make ray-down         stop it"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps keyed on pyproject.toml: re-install only when the dependencies change, so a second
# `make serve` or `make test` starts at once.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[train,dev,ray]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian packages the tests use: Fashion-MNIST (shipped-model quality tests) and chromium (browser test).
system-deps:
	@bash scripts/system-deps.sh

serve: install
	AE_HOST=$(HOST) AE_PORT=$(PORT) $(BIN)/ae-serve

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile deploy/nginx/Dockerfile

typecheck: install-dev
	$(BIN)/mypy

test: install-dev system-deps lint
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

bench: install-dev system-deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
