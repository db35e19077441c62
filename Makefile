# chain-scheduler: `make demo` runs a market, `make test` runs every check.
# Both install what they need (apt, npm, pip) and are safe to run twice.

PY      := .venv/bin/python
STAMPS  := .make
SHELL   := /bin/bash

.PHONY: all setup demo test lint contracts contracts-check pytest bench clean

all: test

$(STAMPS):
	mkdir -p $(STAMPS)

$(STAMPS)/apt: scripts/apt_deps.sh | $(STAMPS)
	bash scripts/apt_deps.sh
	touch $@

$(STAMPS)/npm: package.json package-lock.json | $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(STAMPS)/venv: pyproject.toml | $(STAMPS)
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMPS)/apt $(STAMPS)/npm $(STAMPS)/venv

demo: setup
	$(PY) scripts/demo.py

lint: $(STAMPS)/venv
	$(PY) -m ruff check chain_scheduler compute_node storage tests scripts bench
	$(PY) -m mypy
	.venv/bin/lint-imports

contracts: setup
	$(PY) scripts/compile_contracts.py

contracts-check: setup
	$(PY) scripts/compile_contracts.py --check
	$(PY) scripts/run_slither.py

pytest: setup
	$(PY) -m pytest -q

test: setup lint contracts-check pytest

bench: setup
	$(PY) bench/gas.py
	$(PY) bench/storage.py
	$(PY) bench/executors.py
	$(PY) bench/e2e.py

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache crytic-export
