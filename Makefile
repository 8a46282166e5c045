# embedline: `make run` ingests the sample corpus; `make test` runs the test suite.
# Both create .venv and install the locked dependencies on first use.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints a warning per package for find-links folders this machine's pip.conf names but lacks
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
SMOKE_QUERY ?= How many usable host addresses does a /27 subnet give me?
PREFECT_PORT ?= 4200
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install run test test-slow test-all lint bench bench-peers serve stop deploy worker clean lock

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the locked dependencies + embedline

run: install  ## dvc repro the pipeline on params.yaml, then print a summary
	@start=$$(date +%s); \
	dvc repro && \
	embedline summary --query "$(SMOKE_QUERY)" --seconds $$(( $$(date +%s) - start ))

test: install lint  ## lint (ruff + mypy, ~1 min warm) then the default (fast) test suite
	$(BIN)/pytest -q

test-slow: install  ## only the tests marked slow (Prefect server + UI, DVC experiments, crash tests)
	$(BIN)/pytest -q -m slow || [ $$? -eq 5 ]

test-all: install
	$(BIN)/pytest -q -m "slow or not slow"

lint: install  ## ruff (incl. C901 complexity <= 12, BLE001 blind except) + mypy
	$(BIN)/ruff check flows tasks tests benchmarks embedline
	$(BIN)/mypy flows tasks embedline

bench: install  ## benchmarks on the sample corpus; results in benchmarks/results/*.json
	$(BIN)/python -m benchmarks.run

bench-peers: install  ## only embedline vs LlamaIndex / LangChain (peers live in benchmarks/.venv-peers)
	$(BIN)/python -m benchmarks.run --only peers

serve: install  ## a local Prefect server + UI on 127.0.0.1:$(PREFECT_PORT)
	embedline serve --port $(PREFECT_PORT)

stop:  ## stop the worker and the server that `make worker` / `make serve` started
	embedline serve --stop

deploy: install  ## create the work pool and the nightly-ingest deployment (needs `make serve`)
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api embedline deploy

worker: install  ## run scheduled/triggered deployment runs (background; log in .prefect/worker.log; `make stop` ends it)
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api embedline serve --worker embedline-process

lock:  ## re-resolve the lock file from pyproject.toml (in a scratch venv)
	rm -rf /tmp/embedline-lock && $(PYTHON) -m venv /tmp/embedline-lock && \
	/tmp/embedline-lock/bin/pip install -q --upgrade "pip>=25.1" && \
	/tmp/embedline-lock/bin/pip install -q . --group dev && \
	/tmp/embedline-lock/bin/pip freeze --exclude embedline > requirements.lock

clean:  ## remove generated artifacts, the embedded store and the embedding cache (keeps tracked files)
	git clean -fdX -- data/interim data/embeddings data/receipts data/metrics data/qdrant data/cache
	rm -rf .prefect
