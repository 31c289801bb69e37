# gru_jax developer commands. Every target installs what it needs into ./.venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
CONFIG ?= configs/seq_digits.py
WORKDIR ?= workdirs/seq_digits
export KERAS_BACKEND := jax

.PHONY: install test test-fast lint format bench train clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes (idempotent).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -n 2 --durations=15 tests

test-fast: install
	$(PY) -m pytest -q -n 2 -m "not slow" tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# GRU peers (training step + inference) and the ConvGRU variants; JSON under benchmarks/results.
bench: install
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.bench_convgru

train: install
	$(PY) -m experiments.train --config $(CONFIG) --workdir $(WORKDIR)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
