# The two commands a newcomer needs: `make run` and `make test` (`make test-all` adds the slow tests: CI runs it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# One stamp per install: `make run` needs only the server, `make test` adds the test dependencies. Both install the
# versions pinned in $(LOCK) (as pip constraints: pins of packages not needed are ignored).
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-all bench install lock clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# (the C extensions of dataset pushes and exports are compiled by the install, hatch_build.py: a change to one installs
# again)
C_SOURCES := $(wildcard openkvs/datasets/_*.[ch] openkvs/storage/postgres/_*.c)
$(RUN_STAMP): pyproject.toml $(LOCK) $(C_SOURCES) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(LOCK) $(C_SOURCES) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[test]'
	touch $@ $(RUN_STAMP)

install: $(TEST_STAMP)  ## create .venv and install openkvs with the test dependencies

# (no option: an option would win over its OPENKVS_ variable, and the README says every setting works that way)
run: $(RUN_STAMP)  ## start openkvs on http://127.0.0.1:8000 with its data in ./data
	$(BIN)/openkvs serve

# The suite runs in TEST_WORKERS processes (pytest-xdist; 0: in this process), each test file whole in one of them,
# so that a module's shared servers start once. Each worker has its own ports, PostgreSQL schemas, Redis key
# prefixes and temporary directories (tests/conftest.py makes them unique). Four on two cores: much of the suite
# waits (on servers it starts, PostgreSQL, the S3 server, timeouts under test), and four workers fill those waits.
# Measured on 2 cores, quiet (BENCHMARKS.md): 2 workers 3:30, 3 2:53, 4 2:45, 6 3:03.
TEST_WORKERS ?= 4

# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set: without it every pytest worker compiles and
# rewrites the assertions of every test module again on each run (about 10 s of CPU per worker), and every server
# and command subprocess the tests start compiles openkvs again. (__pycache__ is ignored by git.)
# Two tiers. `make test`, what a developer runs after a change: every test but those marked `slow` (the long
# compatibility runs: schemathesis, the hostile fuzz pass, Crawlee crawls; browser runs; memory-growth and other
# long end-to-end runs), a few minutes. `make test-all`: the whole suite, slow tests included; CI (.ci/run) runs it.
# OPENKVS_TEST_EXAMPLES: how many cases each Hypothesis property test tries (tests/conftest.py): "quick" a tenth of
# its own count (at least 10) under `make test`, "full" every one under `make test-all`, so CI runs them all.
# -p no:schemathesis: only the slow tier has schemathesis tests (their modules are not even imported by the quick
# one, tests/conftest.py _Module), and its plugin's imports cost each pytest process ~0.5 s of CPU.
test: $(TEST_STAMP)  ## run the linter, the type checker and the test suite without the slow tests
	$(BIN)/ruff check openkvs tests bench
	$(BIN)/mypy openkvs
	$(BIN)/mypy bench
	env -u PYTHONDONTWRITEBYTECODE OPENKVS_TEST_EXAMPLES=quick $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" -p no:schemathesis $(PYTEST_ARGS)

test-all: $(TEST_STAMP)  ## run the linter, the type checker and the whole test suite, slow tests included (CI)
	$(BIN)/ruff check openkvs tests bench
	$(BIN)/mypy openkvs
	$(BIN)/mypy bench
	env -u PYTHONDONTWRITEBYTECODE OPENKVS_TEST_EXAMPLES=full $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(TEST_STAMP)  ## run the benchmarks (see BENCHMARKS.md)
	$(BIN)/python -m bench $(BENCH_ARGS)

lock:  ## rewrite requirements.lock: the newest versions pyproject.toml allows, installed in a clean venv
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q '.[test]'
	{ echo "# The versions 'make run' and 'make test' install (pip constraints). Rewritten by 'make lock' from a clean"; \
	  echo "# venv with openkvs[test] on $$(.venv-lock/bin/python -V); never edited by hand."; \
	  .venv-lock/bin/pip freeze --exclude openkvs; } > $(LOCK)
	rm -rf .venv-lock

clean:  ## remove the virtual environment and caches (not ./data)
	rm -rf $(VENV) .venv-lock .pytest_cache .hypothesis .mypy_cache .ruff_cache
