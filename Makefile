# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KEEL_PORT ?= 8000

.PHONY: run test setup lint typecheck slo-rules pytest bench clean

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

## test: set up, then ruff, mypy --strict, promtool on the SLO rules, and pytest
test: setup lint typecheck slo-rules pytest

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/keel migrate lint

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q

## slo-rules: generate the SLO rules and their unit tests, then `promtool check` and `promtool test`
## them (promtool: Debian package prometheus; .ci/run installs it). Without promtool this is
## skipped, unless KEEL_REQUIRE_SERVICES=1 (CI), where it fails.
slo-rules: setup
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/keel slo rules --output-dir "$$tmp" --json >/dev/null && \
	if command -v promtool >/dev/null; then \
	  promtool check rules "$$tmp/keel-slo-rules.yaml" && \
	  (cd "$$tmp" && promtool test rules keel-slo-rules.test.yaml); \
	elif [ -n "$$KEEL_REQUIRE_SERVICES" ] && [ "$$KEEL_REQUIRE_SERVICES" != 0 ]; then \
	  echo "promtool is missing (apt-get install prometheus) and KEEL_REQUIRE_SERVICES=1"; exit 1; \
	else echo "slo-rules: promtool not installed, skipped (apt-get install prometheus)"; fi

## bench: the end-to-end comparisons with their peers (issue 19); BENCH_ARGS=--quick for a short run
BENCH_ARGS ?=
bench: setup
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PYTHONPATH=$(CURDIR)/src $(BIN)/python bench/e2e/run.py $(BENCH_ARGS)
	@echo "see bench/README.md for each benchmark's command"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
