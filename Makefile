# Two commands for a fresh clone (see README):
#   make demo   set up and run the whole daily loop end to end on the embedded default
#   make test   set up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
DRIFT_VENV := .venv-drift
BIN := $(VENV)/bin
UV := $(BIN)/uv
TOOLS_DIR ?= $(HOME)/.cache/churn-platform/tools

.PHONY: setup setup-drift demo test lint bench tools clean

setup: $(VENV)/.stamp
setup-drift: $(DRIFT_VENV)/.stamp

$(VENV)/.stamp: requirements/dev.txt requirements/tools.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements/tools.txt
	$(UV) pip sync -q --python $(BIN)/python --require-hashes requirements/dev.txt
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

$(DRIFT_VENV)/.stamp: requirements/drift.txt requirements/tools.txt $(VENV)/.stamp
	$(PYTHON) -m venv $(DRIFT_VENV)
	$(UV) pip sync -q --python $(DRIFT_VENV)/bin/python --require-hashes requirements/drift.txt
	touch $@

tools: $(VENV)/.stamp
	TOOLS_DIR=$(TOOLS_DIR) bash scripts/install-tools.sh

demo: setup setup-drift
	$(BIN)/churn demo

test: setup setup-drift tools
	PATH="$(TOOLS_DIR)/bin:$$PATH" $(BIN)/python -m pytest -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .

bench: setup setup-drift
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DRIFT_VENV) data
