# chain-scheduler: `make demo` runs a market, `make test` runs every check.
# Both install what they need (apt, npm, pip) and are safe to run twice.

PY      := .venv/bin/python
STAMPS  := .make
SHELL   := /bin/bash
FORGE   := node_modules/@foundry-rs/forge-linux-amd64/bin/forge
# make fuzz: FUZZ_RUNS x FUZZ_DEPTH handler calls (>= 100,000); FUZZ_SEED replays a campaign.
FUZZ_RUNS  ?= 1000
FUZZ_DEPTH ?= 100

.PHONY: all setup demo test lint contracts contracts-check forge fuzz mutants pytest bench clean

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

# Solidity tests in contracts/test/ (forge, offline, through scripts/solc): the
# bounded invariant campaign of foundry.toml (64 runs x 100 calls, fixed seed;
# forge prints "runs: .., calls: .."), and the handler coverage test (-vv
# prints how many jobs reached each outcome).
forge: $(STAMPS)/npm
	$(FORGE) test -vv

# The long campaign: FUZZ_RUNS x FUZZ_DEPTH calls with a fresh seed (printed).
fuzz: $(STAMPS)/npm
	@seed=$${FUZZ_SEED:-0x$$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')}; \
	echo "make fuzz: $(FUZZ_RUNS) runs x $(FUZZ_DEPTH) calls, seed $$seed (replay: make fuzz FUZZ_SEED=$$seed)"; \
	FOUNDRY_INVARIANT_RUNS=$(FUZZ_RUNS) FOUNDRY_INVARIANT_DEPTH=$(FUZZ_DEPTH) \
		$(FORGE) test --match-test 'invariant_' --fuzz-seed $$seed

# Plant known bugs in a copy of ChainScheduler.sol and check the invariants catch each.
mutants: $(STAMPS)/npm $(STAMPS)/venv
	$(PY) scripts/forge_mutants.py

pytest: setup
	$(PY) -m pytest -q

test: setup lint contracts-check forge pytest

bench: setup
	$(PY) bench/gas.py
	$(PY) bench/storage.py
	$(PY) bench/executors.py
	$(PY) bench/e2e.py

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache crytic-export
