# The two commands of the README: `make demo` and `make test`. Each creates .venv if missing and
# installs what it needs; nothing has to be installed by hand.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-runtime
STAMP_DEV := $(VENV)/.installed-dev
STAMP_STANDINS := $(VENV)/.installed-standins
DEMO_HOME ?= $(CURDIR)/.tower/demo
AZURITE   := node_modules/.bin/azurite-table

.PHONY: demo standins test bench mutate lint clean help

help:
	@echo "make demo   run the example pipeline locally (simulated platforms, time-scaled)"
	@echo "make standins  start the local stand-ins examples/local/catalog.yaml runs against"
	@echo "make test   run the whole test suite"
	@echo "make bench  run the orchestration benchmarks (results in benchmarks/RESULTS.md)"
	@echo "make mutate mutation-test the core modules, not in CI (results in tests/MUTATION.md)"
	@echo "make lint   ruff"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# setuptools warns on every editable install of a flat layout ("Editable installation..."): not news.
$(STAMP_RUN): $(PY) requirements.txt pyproject.toml
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -r requirements.txt -e .
	touch $@

$(STAMP_DEV): $(STAMP_RUN) requirements-dev.txt examples/local/requirements.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The local stand-ins (fakesnow) are not runtime packages: the app in Azure never needs them.
$(STAMP_STANDINS): $(STAMP_RUN) examples/local/requirements.txt
	$(PY) -m pip install --quiet -r examples/local/requirements.txt
	touch $@

# Azurite (npm) is the local Azure Table Storage the run-history table store is tested against.
$(AZURITE):
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ for the Azurite tests"; exit 1; }
	npm install --no-save --no-package-lock --no-audit --no-fund --silent azurite@3

demo: $(STAMP_RUN)
	@rm -rf "$(DEMO_HOME)"
	TOWER_HOME="$(DEMO_HOME)" $(VENV)/bin/tower --catalog examples/refinery/catalog.yaml validate
	TOWER_HOME="$(DEMO_HOME)" $(VENV)/bin/tower --catalog examples/refinery/catalog.yaml plan nightly
	TOWER_HOME="$(DEMO_HOME)" $(VENV)/bin/tower --catalog examples/refinery/catalog.yaml \
		run nightly --simulate --time-scale 0.002
	@echo "(the demo's state is in $(DEMO_HOME): TOWER_HOME=$(DEMO_HOME) $(VENV)/bin/tower runs)"

standins: $(STAMP_STANDINS)
	$(PY) examples/local/standins.py

test: $(STAMP_DEV) $(AZURITE)
	$(VENV)/bin/ruff check .
	@bash tests/browser/ensure_chromium.sh
	$(PY) -m pytest -q

bench: $(STAMP_DEV)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_orchestration.py
	$(PY) benchmarks/bench_cli.py
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_push.py
	$(PY) benchmarks/bench_dispatch.py

# Mutation testing (mutmut), minutes per module: MUTATE="graph scheduler" picks modules, MUTATE_JOBS=N
# the parallel workers. Niced: the machine is shared.
MUTATE ?=
mutate: $(STAMP_DEV)
	nice -n 19 $(PY) tests/mutate.py $(MUTATE)

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .tower .pytest_cache .ruff_cache *.egg-info node_modules .mutate
