# The two set-up commands: `make demo` (the main job) and `make test` (the suite). Both work from
# a clean clone: they install uv, the locked environment and the system packages they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# The real Chicago crimes 2024 file, read in place (never copied into the project).
CRIMES_TEST_DATA ?= $(abspath ../shared/data/chicago_crimes_2024.csv.gz)
export CRIMES_TEST_DATA

.PHONY: help install system-deps lint format unit test e2e demo down bench clean

help:
	@echo "make demo   - start the local stack and run the ETL end to end (the main job)"
	@echo "make test   - install everything, lint, type-check and run the whole suite"
	@echo "make down   - stop what make demo started"
	@echo "make unit   - the fast unit tests only;  make bench - benchmarks (not a test)"

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(BIN)/crimes: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked
	@touch $@

install: $(BIN)/crimes

system-deps:
	@scripts/install-system-deps.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: install
	$(BIN)/pytest -m "not e2e"

test: install system-deps lint
	$(BIN)/pytest --durations=15

demo: install system-deps
	$(BIN)/crimes demo

down: install
	$(BIN)/crimes stack down

bench: install system-deps
	@command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk
	@pkg-config --exists grpc++ 2>/dev/null || \
		apt-get install -y --no-install-recommends g++ pkg-config libgrpc++-dev
	$(BIN)/python bench/etl_full.py
	$(BIN)/python bench/training_full.py
	$(BIN)/python bench/model_service.py
	$(BIN)/python bench/gateway.py

clean: down
	rm -rf .crimes
