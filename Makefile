# The two commands of the README: `make run` and `make test`. Both set everything up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint install bench clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	./scripts/run.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run --settings tests.settings

test: lint chromium
	$(BIN)/pytest

# The browser tests (tests/e2e) drive Debian's Chromium; Playwright never downloads a browser here.
# Installed once, only when missing (apt needs root: sudo when not root).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	@test -x $(CHROMIUM)

# The benchmarks need PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/llmlog_bench).
ROWS ?= 1000000
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --rows $(ROWS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
