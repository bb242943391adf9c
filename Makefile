# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.curate-installed
# img2dataset, the field's downloader, is a producer the ingest tests run; it needs pandas<3,
# so it lives in a venv of its own
I2D_VENV ?= .venv-i2d
I2D := $(I2D_VENV)/bin/img2dataset
export CURATE_IMG2DATASET ?= $(CURDIR)/$(I2D)
export NO_ALBUMENTATIONS_UPDATE = 1
export NUMBA_CACHE_DIR ?= $(CURDIR)/.venv/numba-cache

.PHONY: demo test test-fast bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(I2D):
	test -x $(I2D_VENV)/bin/python || python3 -m venv $(I2D_VENV)
	$(I2D_VENV)/bin/python -m pip install --quiet 'img2dataset==1.47.0'

demo: $(STAMP)
	$(VENV)/bin/curate demo

test: $(STAMP) $(I2D)
	$(PY) -m pytest -q

# the fast tier (about two minutes on two cores): every test not marked slow
test-fast: $(STAMP) $(I2D)
	$(PY) -m pytest -q -m "not slow"

# every benchmark, one table (bench/out/suite.md); BENCH_ARGS=--quick drops the 1M coreset
bench: $(STAMP)
	$(PY) bench/suite.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) workspace
