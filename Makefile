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
# The suite runs in parallel (pytest-xdist, one file per worker at a time): most tests wait on real
# servers, browsers and processes, so three workers keep two cores busy. Each worker has its own
# test database, cloned from one the xdist controller migrates, and its own Redis database
# (tests/conftest.py). With --dist loadfile the longest file bounds the wall time: a long crawl or
# fuzzing run gets a file of its own, and --no-loadscope-reorder keeps the order tests/conftest.py
# gives (heaviest files first; xdist's own order, by test count, started the one-test files last).
# Three is kept, not re-measured: two against three was not compared (on 2026-12-01 the shared
# 2-core machine ran at load 13-24); a worker no longer migrates a database of its own, which
# made each extra worker dearer. PYTEST_WORKERS=0 runs it serially. Tests
# marked `serial` (they drive a Celery worker through this process's Celery app, which another
# file's tests in the same worker process have been seen to disturb) run afterwards, on their own,
# on the parallel pass's migrated template (MCPGOV_TEST_TEMPLATE_KEEP, tests/conftest.py) instead of
# migrating a database again.
PYTEST_WORKERS ?= 3

.PHONY: run test deps lint fmt system-deps chromium bubblewrap upstreams clean bench

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

# Debian packages the suite drives for real: Chromium (browser tests; Playwright's own download
# does not work here), bubblewrap (the sandboxed portal-side stdio discovery), rsyslog (the
# syslog digest sink and SIEM receivers) with its TLS driver (rsyslog-gnutls). Installed only when
# missing; needs root or sudo.
SYSTEM_PACKAGES := chromium:/usr/bin/chromium bubblewrap:/usr/bin/bwrap rsyslog:/usr/sbin/rsyslogd \
	rsyslog-gnutls:/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do test -e "$${p#*:}" || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages for the tests:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; fi

# Kept for muscle memory: both install every system package the suite needs.
chromium bubblewrap: system-deps

# upstreams: npm's filesystem server, one of the demo's runnable servers (seed_demo).
run: deps upstreams
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py seed_demo
	@echo "Portal: http://$(HOST):$(PORT)/  (demo logins are in README.md)"
	MCPGOV_GATEWAY_COMMAND=$(CURDIR)/$(BIN)/mcpgov $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: deps upstreams system-deps
	@if [ -z "$$DATABASE_URL" ] && $(BIN)/python -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=2).close()" 2>/dev/null; then \
	  echo "Running the suite on PostgreSQL ($(PG_URL))"; export DATABASE_URL=$(PG_URL); \
	else echo "Running the suite on $${DATABASE_URL:-SQLite (PostgreSQL not reachable)}"; fi; \
	export MCPGOV_TEST_TEMPLATE_KEEP=1; \
	REDIS_TEST_URL=$(REDIS_TEST_URL) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); \
	parallel=$$?; \
	REDIS_TEST_URL=$(REDIS_TEST_URL) $(BIN)/pytest --serial-only $(PYTEST_ARGS); \
	serial=$$?; [ $$parallel -eq 0 ] && { [ $$serial -eq 0 ] || [ $$serial -eq 5 ]; }

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check config portal governance audit incidents mcpgov tests bench

fmt: deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format config portal governance audit incidents mcpgov tests bench

# Every issue-#12 figure in one table (bench/run_all.py); BENCH_QUICK=1 make bench for shorter runs,
# BENCH_ARGS="--only governed_path,tools_list" for some of them.
bench: deps upstreams
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules db.sqlite3 var
