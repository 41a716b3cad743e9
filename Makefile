# ae-denoise: every target creates what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: help install install-dev system-deps serve test lint typecheck bench clean

help:
	@echo "make serve    install the service and serve the shipped models on $(HOST):$(PORT)"
	@echo "make test     install everything the tests need and run the whole suite"
	@echo "make lint     ruff + mypy"
	@echo "make bench    run the benchmarks (see docs/benchmarks.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps keyed on pyproject.toml: re-install only when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[train,dev]'
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

test: install-dev system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
