# The two commands of the README: `make run` and `make test`. Everything else is set-up they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install system-deps run test unit integration bench lint clean

install: $(STAMP) system-deps ## create .venv and install the pinned dependencies (idempotent)

# Debian packages the tests drive: Chromium for the browser test (never a downloaded browser), PostgreSQL 15
# for the records tests. Installed only when missing, and only where we may (root); otherwise say what to run.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	test -x /usr/lib/postgresql/15/bin/initdb || missing="$$missing postgresql-15"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

# pyproject.toml takes Python 3.11 only: another version would fail on the last pip line, after the 4-minute build
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || { \
	  command -v "$(PYTHON)" >/dev/null || { echo "$(PYTHON) not found: install Python 3.11, or name it: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)" >&2; exit 1; }; \
	  "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	    echo "$(PYTHON) is Python $$("$(PYTHON)" -c 'import platform; print(platform.python_version())'); this project needs 3.11: make PYTHON=python3.11 $(MAKECMDGOALS)" >&2; exit 1; }; \
	  "$(PYTHON)" -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

run: $(STAMP) ## seed the store, start the embedded LLM and serve the API (the Debian packages are for the tests only)
	$(BIN)/triage ingest
	$(BIN)/triage serve

test: install ## unit + integration tests (real llama.cpp server, real Chroma, real FastAPI)
	$(BIN)/python -m pytest -q -ra --durations=15

unit: install
	$(BIN)/python -m pytest -q -m "not integration"

bench: install ## accuracy and speed on ../shared/datasets; reports under evals/reports/
	$(BIN)/python -m evals.bench
	$(BIN)/python -m evals.bench_speed --runs 3

clean:
	rm -rf data test-artifacts
