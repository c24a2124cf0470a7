# abguard developer entry points. `make install` is idempotent; every other target uses .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint check schema clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check engine tests bench scenarios
	$(BIN)/ruff format --check engine tests bench scenarios
	$(BIN)/mypy

# Generated files are current and the shipped policies are valid.
check: install
	$(BIN)/abguard policy schema --check policies/schema
	$(BIN)/abguard policy validate policies

schema: install
	$(BIN)/abguard policy schema --write policies/schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks print ratios measured in one run; they never fail the build.
bench: install
	$(BIN)/python bench/bench_engine.py
