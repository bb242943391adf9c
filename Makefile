# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.curate-installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.venv/numba-cache

.PHONY: demo test test-fast bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/curate demo

test: $(STAMP)
	$(PY) -m pytest -q

# the fast tier (about two minutes on two cores): every test not marked slow
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# every benchmark, one table (bench/out/suite.md); BENCH_ARGS=--quick drops the 1M coreset
bench: $(STAMP)
	$(PY) bench/suite.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) workspace
