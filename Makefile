# medseg: two commands do everything on a fresh machine.
#   make test   bootstrap the environment (reused when the dependency spec is unchanged) and run all tests
#   make demo   same bootstrap, then run the main job on bundled/shared sample data
SHELL := /bin/bash
PYTHON ?= python3.11
ifeq (, $(shell command -v $(PYTHON) 2>/dev/null))
PYTHON := python3
endif
# The heavy third-party environment (~6.5 GB with torch) lives in a cache keyed by the hash of
# the dependency spec, so fresh clones (CI) reuse it; .venv is a link to it.
SPEC_HASH := $(shell $(PYTHON) tools/spec_hash.py pyproject.toml)
CACHE_DIR ?= $(HOME)/.cache/medseg
VENV_CACHE := $(CACHE_DIR)/venv-$(SPEC_HASH)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test demo env system-deps lint typecheck bench clean-env

env:
	@bash tools/bootstrap_env.sh "$(PYTHON)" "$(VENV_CACHE)" "$(VENV)"

# Debian programs the tests use: independent oracles (dciodvfy, plastimatch, dcmtk's
# dcmdump/echoscu/storescu), a real PACS for the DICOM node's tests (orthanc) and a real browser
# for the QA report's tests (chromium + chromium-driver). Installed when running as root;
# otherwise the tests that need them say how to install them. The tests start and stop the
# services themselves (the Debian packages' own services are not used).
DEBIAN_PKGS := dicom3tools plastimatch dcmtk orthanc chromium chromium-driver
DEBIAN_BINS := dciodvfy plastimatch dcmdump Orthanc chromium chromedriver
system-deps:
	@missing=""; set -- $(DEBIAN_PKGS); for bin in $(DEBIAN_BINS); do \
	  command -v $$bin >/dev/null || missing="$$missing $$1"; shift; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    (apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null)); \
	  else echo "not root: cannot install$$missing (sudo make system-deps)"; fi; \
	fi

test: env system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: env
	$(BIN)/python -m medseg.demo --out demo_output

lint: env
	$(BIN)/ruff check medseg tests benchmarks pipelines
	$(BIN)/ruff format --check medseg tests benchmarks pipelines
	$(BIN)/mypy

# every benchmark with its default settings (tens of minutes: MONAI's metrics and the large
# inference case dominate); the figures and exact commands are in docs/benchmarks.md
BENCHMARKS := io_dicom metrics export training inference photo
bench: env system-deps
	set -e; for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; $(BIN)/python benchmarks/$$b.py; done

clean-env:
	rm -rf $(VENV) $(VENV_CACHE)
