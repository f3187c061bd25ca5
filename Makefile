# Two commands do all the set-up on a fresh machine:
#   make run    — virtualenv, install, migrate, demo data, portal on http://127.0.0.1:8000
#   make test   — the whole suite (PostgreSQL when reachable, else SQLite)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# PostgreSQL for the suite when one answers on 127.0.0.1:5432 (CI starts it); override with DATABASE_URL=.
PG_URL ?= postgres://postgres@127.0.0.1:5432/mcpgov
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test deps lint fmt chromium bubblewrap upstreams clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

deps: $(VENV)/.installed

# Real MCP servers from the npm registry for the enforcer's end-to-end tests.
node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

upstreams: node_modules/.installed

# Debian's Chromium for the browser tests (Playwright drives it; its own download does not work here).
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "Installing Debian's chromium for the browser tests…"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

# Debian's bubblewrap for the sandboxed portal-side stdio discovery tests (MCPGOV_PORTAL_STDIO_DISCOVERY=sandbox).
bubblewrap:
	@command -v bwrap >/dev/null || { \
	  echo "Installing Debian's bubblewrap for the discovery sandbox tests…"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap; fi; }

run: deps
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py seed_demo
	@echo "Portal: http://$(HOST):$(PORT)/  (demo logins are in README.md)"
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

test: deps upstreams chromium bubblewrap
	@if [ -z "$$DATABASE_URL" ] && $(BIN)/python -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=2).close()" 2>/dev/null; then \
	  echo "Running the suite on PostgreSQL ($(PG_URL))"; export DATABASE_URL=$(PG_URL); \
	else echo "Running the suite on $${DATABASE_URL:-SQLite (PostgreSQL not reachable)}"; fi; \
	REDIS_TEST_URL=$(REDIS_TEST_URL) $(BIN)/pytest $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check config portal governance audit incidents mcpgov tests bench

fmt: deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format config portal governance audit incidents mcpgov tests bench

bench: deps upstreams
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules db.sqlite3 var
