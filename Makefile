# nova-disk-tuning: set-up, tests, demo and benchmarks.
# Every target installs what it needs first (Debian packages from bindep.txt
# as root, then the virtualenv .venv with the package installed editable), so
# `make demo` and `make test` work on a fresh Debian 12 machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_SYS := $(VENV)/.system-deps
STAMP_PY := $(VENV)/.python-deps
BINDEP_PROFILE ?= test
PYTEST := $(BIN)/python -m pytest
# In CI (root) the functional and e2e suites must run: turn their skips into failures.
ROOT_TESTS := $(shell [ "$$(id -u)" = 0 ] && echo 1)

.PHONY: all deps venv test pep8 unit functional e2e genconfig genconfig-check docs-rules demo bench bench-quick releasenotes clean

all: test

$(BIN)/python:
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || $(MAKE) --no-print-directory _apt PKGS="python3-venv"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip setuptools wheel

# Debian packages: bindep says what is missing; apt-get installs it as root.
$(STAMP_SYS): bindep.txt | $(BIN)/python
	@$(BIN)/python -m pip install -q bindep
	@missing="$$($(BIN)/bindep -b $(BINDEP_PROFILE) || true)"; \
	if [ -n "$$missing" ]; then \
		$(MAKE) --no-print-directory _apt PKGS="$$missing"; \
	fi
	@touch $@

_apt:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "Missing Debian packages: $(PKGS)"; \
		echo "Install them as root: apt-get install $(PKGS)  (or run make as root)"; \
		exit 1; \
	fi
	@echo "Installing Debian packages: $(PKGS)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PKGS) >/dev/null

$(STAMP_PY): $(STAMP_SYS) requirements.txt test-requirements.txt setup.cfg
	$(BIN)/python -m pip install -q -r requirements.txt -r test-requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

deps venv: $(STAMP_PY)

pep8: $(STAMP_PY)
	$(BIN)/ruff check nova_disk_tuning tests
	$(BIN)/ruff format --check nova_disk_tuning tests

unit: $(STAMP_PY)
	$(PYTEST) tests/unit -q

functional: $(STAMP_PY)
	NDT_FORBID_SKIPS=$(ROOT_TESTS) $(PYTEST) tests/functional -q

e2e: $(STAMP_PY)
	NDT_FORBID_SKIPS=$(ROOT_TESTS) $(PYTEST) tests/e2e -q

genconfig: $(STAMP_PY)
	$(BIN)/oslo-config-generator --config-file etc/nova-disk-tuning/nova-disk-tuning-config-generator.conf

genconfig-check: $(STAMP_PY)
	$(PYTEST) tests/unit/test_sample_config.py -q

# The decision table of the tuning policy, generated from tuning.py itself.
docs-rules: $(STAMP_PY)
	$(BIN)/python -m nova_disk_tuning.virt.libvirt.rules > doc/source/tuning-rules.rst
	$(BIN)/python -m nova_disk_tuning.virt.libvirt.rules --readme README.rst

releasenotes: $(STAMP_PY)
	$(BIN)/reno lint

test: pep8 genconfig-check unit functional e2e releasenotes

demo: $(STAMP_PY)
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf demo --workdir demo-work

bench: $(STAMP_PY)
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf bench --output bench-results

bench-quick: $(STAMP_PY)
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf bench --quick --output bench-results

clean:
	rm -rf $(VENV) demo-work bench-results .pytest_cache .ruff_cache .hypothesis
