# mida: the first two commands on a fresh machine are `make run` and `make test`.
# Each bootstraps .venv (Python >= 3.11) and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export MIDA_HOME ?= $(CURDIR)/mida-data
SAMPLE_DIR ?= $(MIDA_HOME)/sample-input
SAMPLE_PATIENTS ?= 5

.PHONY: install run test test-fast lint typecheck bench clean help

help:
	@echo "make run    - install, create a node with sample data, serve on http://127.0.0.1:8000"
	@echo "make test   - install, lint, type-check and run the whole test suite"
	@echo "make bench  - ingest and de-identification benchmarks against Orthanc, deid, dicognito"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[postgres,s3,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mida init --institution DEMO --name "Demo Hospital" --exist-ok
	@test -f $(SAMPLE_DIR)/phi_manifest.json || $(BIN)/mida sample $(SAMPLE_DIR) --patients $(SAMPLE_PATIENTS)
	$(BIN)/mida ingest $(SAMPLE_DIR) --collection sample
	$(BIN)/mida labels add docs/examples/labels/ct-liver.yaml
	$(BIN)/mida features extract --collection sample
	$(BIN)/mida stats
	$(BIN)/mida serve

lint: install
	$(BIN)/ruff check src tests bench tools

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n auto --cov --cov-report=term $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -n auto -m "not slow" -x -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m pip install -q -e '.[postgres,s3,dev,bench]'
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
	$(BIN)/python bench/deid.py $(BENCH_ARGS)
	$(BIN)/python bench/dicomweb.py $(DICOMWEB_ARGS)
	$(BIN)/python bench/annotations.py $(ANNOTATION_BENCH_ARGS)
	$(BIN)/python bench/export.py $(EXPORT_BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
