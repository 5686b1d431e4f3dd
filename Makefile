# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench install clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install openkvs with the test dependencies

run: $(STAMP)  ## start openkvs on http://127.0.0.1:8000 with its data in ./data
	$(BIN)/openkvs serve --data-dir ./data

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)  ## run the benchmarks (see BENCHMARKS.md)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:  ## remove the virtual environment and caches (not ./data)
	rm -rf $(VENV) .pytest_cache .hypothesis
