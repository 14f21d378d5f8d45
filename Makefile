# Quick start: `make run` serves on http://127.0.0.1:8080 (SQLite under ./data, in-process bus);
# `make test` runs the whole suite (needs Postgres and Redis on 127.0.0.1; `.ci/run` starts them).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint runtime-image server-image bench-heartbeat clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/workspace-server serve

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

runtime-image:
	bash images/build-runtime-image.sh

# the venv's pip fetches the image's wheels (images/build-server-image.sh)
server-image: $(STAMP)
	PYTHON=$(BIN)/python bash images/build-server-image.sh

bench-heartbeat: $(STAMP)
	$(BIN)/python bench/heartbeat.py

clean:
	rm -rf $(VENV) data .cache .pytest_cache .mypy_cache .ruff_cache
