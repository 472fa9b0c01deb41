# MeetingDash. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
BASE_STAMP := $(VENV)/.installed-base
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: demo run test lint typecheck pytest fmt clean screenshots drill

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "MeetingDash needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(BASE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[redis,postgres]'
	@touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@ $(BASE_STAMP)

## demo: the dashboard on the embedded default (SQLite, in-memory layer, built-in simulator)
# Debug and the simulator are on for the demo only: both default to off.
demo: export DJANGO_DEBUG = 1
demo: export MEETINGDASH_SIMULATOR = 1
demo: export MEETINGDASH_DEMO_ALERTS = 1
demo: $(BASE_STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_demo_user
	$(PY) manage.py serve --host 127.0.0.1 --port 8000

## run: serve against MEETINGBUDDY_API_URL / MEETINGBUDDY_API_TOKEN
run: $(BASE_STAMP)
	@test -n "$$MEETINGBUDDY_API_URL" || { echo "Set MEETINGBUDDY_API_URL (and MEETINGBUDDY_API_TOKEN) first; 'make demo' runs the built-in simulator instead."; exit 2; }
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py serve

## test: linters, type check, then the whole pytest suite
test: lint typecheck pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# django-stubs loads the settings, which need a secret key unless DEBUG is on.
typecheck: $(TEST_STAMP)
	DJANGO_DEBUG=1 $(BIN)/mypy .

pytest: $(TEST_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## drill: the fault drill at drill scale (private PostgreSQL, Redis and nginx; a few minutes)
drill: $(TEST_STAMP)
	$(PY) -m drill.run --sessions 10 --rate 5 --fault-seconds 20 --stall-seconds 20 --burst 600 --write docs/reliability-drill.md

## bench: every row of issue 13's fan-out targets with its baselines, into docs/benchmarks.md
# BENCH_SCALE multiplies every size (1 = the issue's; 0.2 for a quick look). Builds the
# django-eventstream baseline's venv in build/bench-venv on first use (from PyPI).
BENCH_SCALE ?= 1
.PHONY: bench
bench: $(BASE_STAMP)
	$(PY) -m bench.run --scale $(BENCH_SCALE) --write docs/benchmarks.md

## bench-insights: /insights/ render p50/p95 at 100k sessions / 1M events on PostgreSQL
# A private database on DATABASE_URL's (or BENCH_POSTGRES_URL's) server, created and dropped.
.PHONY: bench-insights
bench-insights: $(BASE_STAMP)
	$(PY) -m bench.insights --sessions 100000 --events 1000000

## screenshots: refresh docs/screenshots from the browser tests (tests never write there)
screenshots: $(TEST_STAMP)
	MEETINGDASH_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -p no:randomly -k "see_the_simulated_sessions or a_join_appear_live or failure_panel or failing_while_live or upstream_forgets or widget_stops or watch_it_join or asks_on_its_own_page" tests/e2e/test_browser.py tests/e2e/test_live_truth.py tests/e2e/test_control_browser.py

fmt: $(TEST_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache staticfiles
