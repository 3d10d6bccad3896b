# Two commands: `make demo` runs a demo job, `make test` runs the tests.  Each installs what it needs
# (a virtual environment in .venv with this project and its dependencies) on a fresh machine.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

.PHONY: install bench-install demo test bench
install: $(STAMP)

bench-install: $(BENCH_STAMP)

demo: $(STAMP)
	$(VENV)/bin/stylecast demo --dir stylecast-demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(BENCH_STAMP)
	bench/run
