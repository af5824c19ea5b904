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
DEBIAN_PKGS := dicom3tools plastimatch dcmtk
PYTEST_ARGS ?=

.PHONY: test demo env system-deps lint typecheck bench clean-env

env:
	@bash tools/bootstrap_env.sh "$(PYTHON)" "$(VENV_CACHE)" "$(VENV)"

# Debian tools the tests use as independent oracles (DICOM validator, RTSTRUCT reader).
# Installed when running as root; otherwise the tests that need them report how to install them.
system-deps:
	@missing=""; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	command -v plastimatch >/dev/null || missing="$$missing plastimatch"; \
	command -v dcmdump >/dev/null || missing="$$missing dcmtk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
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
