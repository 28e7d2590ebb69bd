# Every target creates .venv and installs the project (with dev extras) when needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install up demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/moeplane up

demo: $(STAMP)
	$(BIN)/moeplane demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/api_overhead.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/kernels.py
	$(BIN)/python bench/finetune.py
	$(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
