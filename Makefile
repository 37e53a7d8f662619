# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KEEL_PORT ?= 8000

.PHONY: run test setup lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## run: set up, migrate, seed the demo organisation, serve on 127.0.0.1:8000
run: setup
	$(BIN)/keel migrate apply
	$(BIN)/keel admin seed-demo --base-url http://127.0.0.1:$(KEEL_PORT)
	$(BIN)/keel serve --host 127.0.0.1 --port $(KEEL_PORT)

## test: set up, then ruff, mypy --strict and pytest
test: setup lint typecheck pytest

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/keel migrate lint

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q

## bench: the end-to-end comparisons with their peers (issue 19); BENCH_ARGS=--quick for a short run
BENCH_ARGS ?=
bench: setup
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PYTHONPATH=$(CURDIR)/src $(BIN)/python bench/e2e/run.py $(BENCH_ARGS)
	@echo "see bench/README.md for each benchmark's command"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
