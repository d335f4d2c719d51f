# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Offline and quiet Prefect everywhere this Makefile runs it.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_ENABLED := true
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: help venv demo test lint typecheck pytest emulator serve bench clean

help:
	@echo "make demo   - run the sample job against the local emulator and show the result"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make bench  - quick benchmarks with baselines; make bench BENCH_ARGS=--full for 1M and 10M rows"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/grok-batch demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck pytest

emulator: $(STAMP)
	$(BIN)/grok-batch emulator

serve: $(STAMP)
	$(BIN)/grok-batch serve

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .prefect .mypy_cache .ruff_cache .pytest_cache
