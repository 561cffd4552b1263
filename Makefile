# Continuous training — one entry point for developers and CI.
#   make demo        the whole loop on this machine (S3, MLflow, endpoint, Airflow scheduler); ARGS=--exit for CI
#   make test        create .venv if needed, lint, type-check, run every test (what CI runs)
#   make test-fast   unit + DAG tests only, no services (the quick loop)
#   make audit       every pin in constraints.txt against OSV (SKIPPED when unreachable; CT_AUDIT_REQUIRED=1 fails then)
#   make bench       every benchmark as one table (ratios vs. a baseline in the same run) -> bench/results.json
#   make services-up / services-down / services-status   S3, MLflow, endpoint on loopback + an Airflow home (README)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8
export PYTHONPATH := $(CURDIR)

.PHONY: help venv demo lint audit test test-fast test-integration bench bench-quick bench-deps services-up services-down services-status clean

help:
	@sed -n '2,8p' Makefile

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/python -m devtools.demo $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r dags include plugins devtools benchmarks tools

audit: venv
	$(BIN)/python -m tools.audit $(ARGS)

test: lint audit
	$(BIN)/pytest --durations=15

test-fast: venv
	$(BIN)/pytest -m "not integration and not e2e" -q

test-integration: venv
	$(BIN)/pytest -m integration

bench: venv bench-deps
	$(BIN)/python -m benchmarks.run_all $(ARGS)

bench-quick: venv bench-deps
	$(BIN)/python -m benchmarks.run_all --quick --out .bench-quick.json

# wrk drives the serving benchmark (Debian/Ubuntu package); installed when missing and we may.
bench-deps:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq wrk; \
	  else echo "wrk not found: install it (apt-get install wrk) for the serving rows"; fi; }

services-up: venv
	$(BIN)/python -m devtools.services up

services-down: venv
	$(BIN)/python -m devtools.services down

services-status: venv
	$(BIN)/python -m devtools.services status

clean:
	-$(BIN)/python -m devtools.services down 2>/dev/null
	rm -rf .services .demo .pytest_cache .mypy_cache .ruff_cache
