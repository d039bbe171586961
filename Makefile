# The two commands of the README: `make run` and `make test`. Everything else is set-up they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install run test unit integration bench lint clean

install: $(STAMP) ## create .venv and install the pinned dependencies (idempotent)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

run: install ## seed the store, start the embedded LLM and serve the API
	$(BIN)/triage ingest
	$(BIN)/triage serve

test: install ## unit + integration tests (real llama.cpp server, real Chroma, real FastAPI)
	$(BIN)/python -m pytest -q -ra

unit: install
	$(BIN)/python -m pytest -q -m "not integration"

bench: install ## accuracy and speed on ../shared/datasets; reports under evals/reports/
	$(BIN)/python -m evals.bench

clean:
	rm -rf data test-artifacts
