# The two commands of the README: `make run` and `make test`. Both set everything up on a fresh clone.
# `make help` lists every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: serving needs the runtime dependencies only; tests and lint add the dev tools (pytest,
# ruff, litellm, playwright, schemathesis...).
RUNTIME_STAMP := $(VENV)/.runtime-stamp
DEV_STAMP := $(VENV)/.dev-stamp
MIN_PYTHON := 3.11

.DEFAULT_GOAL := help
.PHONY: help run reset-demo test lint install install-dev bench clean chromium clickhouse python-check

help: ## List the targets
	@echo "llmlog: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1|\2/' | \
	  awk -F'|' '{ printf "  %-14s %s\n", $$1, $$2 }' | sed 's/^    /  /'
	@echo "Variables: RESET=1 (run: new admin password and API key), DEMO_ROWS=N (run: demo rows for an"
	@echo "  empty database), BIND=host:port, ROWS=N (bench), PYTHON=python3.12 (the interpreter for .venv)"

python-check:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < tuple(map(int, "$(MIN_PYTHON)".split("."))))' \
	  2>/dev/null || { echo "llmlog needs Python $(MIN_PYTHON) or newer; '$(PYTHON)' is $$($(PYTHON) \
	  --version 2>&1 | head -1 || echo missing). Run e.g. 'make run PYTHON=python3.12'." >&2; exit 1; }

$(RUNTIME_STAMP): pyproject.toml | python-check
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(RUNTIME_STAMP) ## Create .venv with the runtime dependencies

install-dev: $(DEV_STAMP) ## Add the test and lint tools to .venv

run: $(RUNTIME_STAMP) ## Serve web + worker + beat on http://127.0.0.1:8000 (Ctrl-C stops; RESET=1: new login and key)
	RESET=$(RESET) ./scripts/run.sh

reset-demo: $(RUNTIME_STAMP) ## Delete the SQLite database and var/ state: the next `make run` starts afresh
	./scripts/reset-demo.sh

lint: $(DEV_STAMP) ## ruff check, ruff format --check, missing migrations
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run --settings tests.settings

# Test processes side by side (pytest-xdist), a file each at a time: many tests wait on servers and
# workers more than they compute. TEST_WORKERS=0 runs them all in one process.
TEST_WORKERS ?= 2
test: lint chromium clickhouse ## Lint, then every test (PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The browser tests (tests/e2e) drive Debian's Chromium; Playwright never downloads a browser here.
# Installed once, only when missing (apt needs root: sudo when not root).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium: ## Install Debian's Chromium for the browser tests, when missing
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	@test -x $(CHROMIUM)

# The ClickHouse tests (tests/llmlog/test_clickhouse*.py) start Debian's server on ports of their own,
# with a config and data under var/ (tests/clickhouse_server.py); the system's server is never started.
CLICKHOUSE_SERVER := /usr/sbin/clickhouse-server
clickhouse: ## Install Debian's clickhouse-server for the ClickHouse tests, when missing
	@test -x $(CLICKHOUSE_SERVER) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clickhouse-server clickhouse-client; }
	@test -x $(CLICKHOUSE_SERVER)

# The benchmarks need PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/llmlog_bench).
ROWS ?= 1000000
bench: $(DEV_STAMP) ## Benchmarks against PostgreSQL (ROWS=N, default 1000000; CLICKHOUSE=1: with and without ClickHouse)
	$(BIN)/python benchmarks/run.py --rows $(ROWS)
	@if [ -n "$(CLICKHOUSE)" ]; then $(MAKE) --no-print-directory clickhouse && \
	  $(BIN)/python benchmarks/bench_clickhouse.py --rows $(ROWS); fi

clean: ## Remove .venv and var/ (the SQLite database, logs, the saved login and key)
	rm -rf $(VENV) var .pytest_cache .ruff_cache
