# xpipe — every target installs what it needs first, so any of them works on a fresh clone.
VENV       ?= .venv
PYTHON     ?= python3
PY         := $(VENV)/bin/python
XPIPE      := $(VENV)/bin/xpipe
STAMP      := $(VENV)/.installed-stamp

# The catalogue `make warehouse` loads: csc20 (the paper's catalogue, over TAP; needs the
# network), csc21, sim (a simulated CSC 2.0-sized catalogue, what `make demo` uses) or a file.
CATALOG    ?= csc20
DETECTIONS ?= 928280
SEED       ?= 42
export XPIPE_WAREHOUSE ?= warehouse/xpipe.duckdb
# CATALOG=csc20|csc21 pulls from the CSC TAP service; TAP_URL / SIMBAD_TAP_URL point the pull and
# the cross-match elsewhere (e.g. the local DaCHS of `make dachs-serve`: TAP_URL=$(DACHS_URL)).
TAP_URL    ?=
SIMBAD_TAP_URL ?= $(TAP_URL)
DACHS      := bash tests/services/dachs/dachs.sh
DACHS_URL  := http://127.0.0.1:8086/tap
DACHS_SIM  ?= warehouse/dachs/sim
DACHS_SCHEMAS ?= csc2 csc21

.PHONY: install warehouse classify demo serve test lint docs clean bench bench-kernel bench-pipeline bench-formats bench-uncertainty bench-serve dachs-serve dachs-stop test-services

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

warehouse: $(STAMP)
ifeq ($(CATALOG),sim)
	$(XPIPE) warehouse --source sim --detections $(DETECTIONS) --seed $(SEED)
else ifneq ($(filter csc20 csc21,$(CATALOG)),)
	$(XPIPE) warehouse --source $(CATALOG) $(if $(TAP_URL),--tap-url $(TAP_URL))
	$(XPIPE) crossmatch $(if $(SIMBAD_TAP_URL),--tap-url $(SIMBAD_TAP_URL))
else
	$(XPIPE) warehouse --source $(CATALOG)
endif

## a local GAVO DaCHS TAP server (root; apt-get) serving a simulated catalogue of DETECTIONS
## rows as CSC tables csc2/csc21 and SIMBAD's basic: then `make warehouse CATALOG=csc20
## TAP_URL=http://127.0.0.1:8086/tap`
dachs-serve: $(STAMP)
	$(DACHS) install
	@set -e; trap 'rc=$$?; [ $$rc = 0 ] || $(DACHS) stop; exit $$rc' EXIT; \
	trap 'exit 130' INT TERM HUP; set -x; \
	$(DACHS) start; \
	rm -rf $(DACHS_SIM); \
	$(XPIPE) simulate --detections $(DETECTIONS) --seed $(SEED) --out $(DACHS_SIM); \
	$(DACHS) load $(DACHS_SIM) $(DACHS_SCHEMAS)

dachs-stop:
	$(DACHS) stop

## the service tests against a local DaCHS (installed and started here for this checkout, and
## stopped on every way out: success, failure, Ctrl-C). The server reads copies of its inputs in
## /var/gavo/inputs, so this works from a checkout other users cannot read.
test-services: $(STAMP)
	$(DACHS) install
	@set -e; trap 'rc=$$?; $(DACHS) stop; exit $$rc' EXIT; trap 'exit 130' INT TERM HUP; \
	set -x; \
	$(DACHS) start; \
	rm -rf warehouse/dachs/test-sim; \
	$(XPIPE) simulate --detections 4000 --seed 7 --out warehouse/dachs/test-sim > /dev/null; \
	$(DACHS) load warehouse/dachs/test-sim csc2 csc21; \
	XPIPE_TAP_TEST_URL=$(DACHS_URL) XPIPE_TAP_TEST_SIM=$(CURDIR)/warehouse/dachs/test-sim \
	  $(PY) -m pytest -m services tests/services

classify: $(STAMP)
	$(XPIPE) classify

## simulate a CSC 2.0-sized catalogue, load it, classify it and print a summary
demo: $(STAMP)
	$(MAKE) --no-print-directory warehouse CATALOG=sim
	$(MAKE) --no-print-directory classify

## the explorer of $(XPIPE_WAREHOUSE) in a browser (after `make demo`): `xpipe serve`, read-only,
## on http://127.0.0.1:8765/ until Ctrl-C
serve: $(STAMP)
	$(XPIPE) serve

## the HTML report of the stored run (after `make demo`): runs `xpipe bic`, `validate`,
## `stability` and `uncertainty` first unless their results are current, then writes $(REPORT)
REPORT     ?= report.html
.PHONY: report
report: $(STAMP)
	$(XPIPE) bic --skip-if-current
	$(XPIPE) validate --skip-if-current
	$(XPIPE) stability --skip-if-current
	$(XPIPE) uncertainty --skip-if-current
	$(XPIPE) report --out $(REPORT)

test: $(STAMP)
	$(PY) -m pytest

## ruff, the import-layer contracts of pyproject.toml ([tool.importlinter]) and mypy on src/
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## docs/tables.md: every table's columns, types and meaning, generated from the contracts
## (schemas/*.yaml and the sidecars in sql/); a test fails when the committed page is stale
docs: $(STAMP)
	$(PY) scripts/table_docs.py

## benchmarks: JSON per benchmark under bench/results/, plus bench/results/SUMMARY.md. The 10^8
## size takes about half an hour and 50 GB of disk (checked before it starts); BENCH_SIM_CACHE=DIR
## keeps the simulated catalogues there for later runs.
BENCH_SIZES ?= 100000 928280 1304376 10000000 100000000
bench: bench-kernel bench-pipeline bench-formats bench-uncertainty bench-serve
	$(PY) bench/summarize.py

bench-kernel: $(STAMP)
	$(PY) bench/kernel.py

bench-pipeline: $(STAMP)
	$(PY) bench/pipeline.py $(BENCH_SIZES)

bench-formats: $(STAMP)
	$(PY) bench/file_formats.py

## `xpipe uncertainty --draws 1000` on every classified detection of the demo catalogue (made in
## bench/work/ unless BENCH_WAREHOUSE names a classified warehouse, which is copied first)
BENCH_WAREHOUSE ?=
bench-uncertainty: $(STAMP)
	$(PY) bench/uncertainty.py $(BENCH_WAREHOUSE)

## the explorer's latency in headless Chromium (Debian's chromium and chromium-driver): every
## interaction of every page, timed until drawn, on a classified warehouse per entry of
## SERVE_BENCH: a number of detections (simulated and classified once in bench/work/serve/;
## BENCH_SIM_CACHE is reused) or a warehouse file
SERVE_BENCH ?= 928280 10000000
bench-serve: $(STAMP)
	$(PY) bench/serve_latency.py $(SERVE_BENCH)

clean:
	rm -rf warehouse/xpipe.duckdb warehouse/xpipe.duckdb.wal warehouse/sim warehouse/tmp
