# xpipe — every target installs what it needs first, so any of them works on a fresh clone.
VENV       ?= .venv
PYTHON     ?= python3
PY         := $(VENV)/bin/python
XPIPE      := $(VENV)/bin/xpipe
STAMP      := $(VENV)/.installed-stamp

# The catalogue `make warehouse` loads: sim (a simulated CSC 2.0-sized catalogue).
CATALOG    ?= sim
DETECTIONS ?= 928280
SEED       ?= 42
export XPIPE_WAREHOUSE ?= warehouse/xpipe.duckdb

.PHONY: install warehouse classify demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

warehouse: $(STAMP)
ifeq ($(CATALOG),sim)
	$(XPIPE) warehouse --source sim --detections $(DETECTIONS) --seed $(SEED)
else
	$(XPIPE) warehouse --source $(CATALOG)
endif

classify: $(STAMP)
	$(XPIPE) classify

## simulate a CSC 2.0-sized catalogue, load it, classify it and print a summary
demo: warehouse classify

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf warehouse/xpipe.duckdb warehouse/xpipe.duckdb.wal warehouse/sim warehouse/tmp
