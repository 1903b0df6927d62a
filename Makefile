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
STAMP_NOVA := $(VENV)/.nova-deps
BINDEP_PROFILE ?= test
PYTEST := $(BIN)/python -m pytest
# In CI (root) the functional and e2e suites must run: turn their skips into failures.
ROOT_TESTS := $(shell [ "$$(id -u)" = 0 ] && echo 1)

.PHONY: all deps system-deps venv test pep8 typecheck unit functional e2e stack-next e2e-next nova-tests onebox nova-demo nova-suites nova-suites-baseline genconfig genconfig-check docs-rules docs demo bench bench-quick releasenotes clean

all: test

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || tools/install-debs python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip setuptools wheel

# Debian packages: bindep says what is missing; tools/install-debs installs all
# of it in one apt-get call as root, or prints the command and stops otherwise.
BINDEP ?= $(BIN)/bindep

system-deps:
	tools/install-debs --bindep $(BINDEP) --profile $(BINDEP_PROFILE)

$(STAMP_SYS): bindep.txt | $(BIN)/python
	@$(BIN)/python -m pip install -q bindep
	@$(MAKE) --no-print-directory system-deps
	@touch $@

# The package, and the benchmarks' own distribution (bench/) that its
# [bench] extra names.
$(STAMP_PY): $(STAMP_SYS) requirements.txt test-requirements.txt setup.cfg bench/setup.cfg bench/requirements.txt
	$(BIN)/python -m pip install -q -r requirements.txt -r test-requirements.txt
	$(BIN)/python -m pip install -q -e '.[bench]' -e ./bench
	@touch $@

deps venv: $(STAMP_PY)

# Nova 34 and what its test harness needs, for the drop-in compute driver's
# tests (nova_disk_tuning/nova/, tests/nova/). Not needed by `make demo`.
$(STAMP_NOVA): $(STAMP_PY) nova-test-requirements.txt
	$(BIN)/python -m pip install -q -e '.[bench,nova]' -e ./bench -r nova-test-requirements.txt
	@touch $@

# The trees every linter covers (tox.ini's pep8 and mypy's files say the same).
LINT_TREES := nova_disk_tuning nova bench tests

pep8: $(STAMP_PY)
	$(BIN)/ruff check $(LINT_TREES)
	$(BIN)/ruff format --check $(LINT_TREES)

typecheck: $(STAMP_PY)
	$(BIN)/mypy

unit: $(STAMP_PY)
	$(PYTEST) tests/unit -q

functional: $(STAMP_PY)
	NDT_FORBID_SKIPS=$(ROOT_TESTS) $(PYTEST) tests/functional -q

e2e: $(STAMP_PY)
	NDT_FORBID_SKIPS=$(ROOT_TESTS) $(PYTEST) tests/e2e -q

# The second stack: libvirt 11.3 and QEMU 10.0 from bookworm-backports, unpacked
# under /var/cache/nova-disk-tuning/stacks/next (never installed into the system),
# and the e2e suite (bench guest --quick included) and the real guest through Nova
# run again on it, in a mount namespace where it is /usr
# (bench/nova_disk_tuning_bench/guest/stacks.py).
STACK_RUN := $(BIN)/python -m nova_disk_tuning_bench.guest.stacks run

stack-next: $(STAMP_PY)
	$(BIN)/python -m nova_disk_tuning_bench.guest.stacks install next

# One worker: two private libvirtds each hand VNC port 5900 to their guest, and
# the second QEMU fails ("Failed to find an available port", seen here).
e2e-next: stack-next $(STAMP_NOVA)
	$(STACK_RUN) next -- env NDT_FORBID_SKIPS=$(ROOT_TESTS) $(PYTEST) tests/e2e -q
	$(STACK_RUN) next -- $(BIN)/stestr run --concurrency 1 tests.nova.test_real_guest

# Nova's harness and Nova's own tests against the drop-in (stestr, .stestr.conf:
# Nova's test classes do not run under pytest). The only skips are the two
# Nova's conformance suite makes for its own libvirt driver.
nova-tests: $(STAMP_NOVA)
	$(BIN)/stestr run

# The one-box Nova (bench/nova_disk_tuning_bench/onebox): Nova's services,
# placement and glance as real processes with private MariaDB, RabbitMQ and
# libvirtds; the Debian packages of bindep's onebox profile, glance and
# gunicorn from onebox-requirements.txt.
STAMP_ONEBOX := $(VENV)/.onebox-deps
$(STAMP_ONEBOX): $(STAMP_NOVA) onebox-requirements.txt bindep.txt
	tools/install-debs --bindep $(BINDEP) --profile onebox
	$(BIN)/python -m pip install -q -r onebox-requirements.txt
	@touch $@

# A server on each driver through its life cycle, side by side (root; about 5 minutes).
NOVA_DEMO_WORK ?= /var/tmp/ndt-onebox

nova-demo: $(STAMP_ONEBOX)
	$(BIN)/python -m nova_disk_tuning_bench.onebox --workdir $(NOVA_DEMO_WORK)

# The same as a test: the XML, QEMU's command line, the guest's read-back, the logs.
onebox: $(STAMP_ONEBOX)
	NDT_FORBID_SKIPS=$(ROOT_TESTS) $(PYTEST) tests/onebox -q

# Nova 34's own libvirt suites (tests/nova_suites) on the drop-in, compared
# with Nova's driver on the same test ids: the outcomes must agree except for
# the divergences listed with their reasons in tests/nova_suites/divergences.yaml.
# Nova's driver's outcomes are recorded once per Nova release
# (nova-suites-baseline, tests/nova_suites/baseline.json); every test where the
# drop-in's outcome differs from the recording, a new test and every listed
# divergence run live on Nova's driver again (tests/nova_suites/baseline.py).
NOVA_SUITES ?= .nova-suites
# OS_TEST_TIMEOUT (oslotest's per-test timeout): a test that hangs fails after
# 10 minutes instead of holding the run for ever (seen once: Nova's
# test_numa_live_migration deadlocked in a worker on the drop-in, and passed
# alone 3 times of 3); a minute later rebind.py's watchdog ends the worker.
SUITE_RUN = OS_TEST_TIMEOUT=600 $(BIN)/stestr --test-path ./tests/nova_suites --top-dir ./ run --subunit

nova-suites: $(STAMP_NOVA)
	rm -rf $(NOVA_SUITES) && mkdir -p $(NOVA_SUITES)
	NDT_NOVA_SUITE=dropin NDT_NOVA_SUITE_EVENTS=$(NOVA_SUITES)/events \
		$(SUITE_RUN) > $(NOVA_SUITES)/dropin.subunit 2> $(NOVA_SUITES)/dropin.log || true
	$(BIN)/python -m tests.nova_suites.baseline recheck $(NOVA_SUITES) > $(NOVA_SUITES)/recheck.list
	if [ -s $(NOVA_SUITES)/recheck.list ]; then \
		NDT_NOVA_SUITE=nova $(SUITE_RUN) --load-list $(NOVA_SUITES)/recheck.list \
			> $(NOVA_SUITES)/nova.subunit 2> $(NOVA_SUITES)/nova.log || true; fi
	$(BIN)/python -m tests.nova_suites.compare $(NOVA_SUITES)

# Nova's driver on the whole of Nova's suites (about 22 minutes), recorded as
# the comparison's baseline: after a Nova upgrade, or when compare says so.
nova-suites-baseline: $(STAMP_NOVA)
	rm -rf $(NOVA_SUITES) && mkdir -p $(NOVA_SUITES)
	NDT_NOVA_SUITE=nova $(SUITE_RUN) > $(NOVA_SUITES)/nova.subunit 2> $(NOVA_SUITES)/nova.log || true
	$(BIN)/python -m tests.nova_suites.baseline record $(NOVA_SUITES)

genconfig: $(STAMP_PY)
	$(BIN)/oslo-config-generator --config-file etc/nova-disk-tuning/nova-disk-tuning-config-generator.conf

genconfig-check: $(STAMP_PY)
	$(PYTEST) tests/unit/test_sample_config.py -q

# The decision table of the tuning policy, generated by policy/rules.py from the policy itself.
docs-rules: $(STAMP_PY)
	$(BIN)/python -m nova_disk_tuning.policy.rules > doc/source/tuning-rules.rst
	$(BIN)/python -m nova_disk_tuning.policy.rules --readme README.rst

releasenotes: $(STAMP_PY)
	$(BIN)/reno lint

# The Sphinx documentation (doc/source), warnings as errors: the configuration
# reference from the options, the release notes from releasenotes/notes.
STAMP_DOCS := $(VENV)/.docs-deps
$(STAMP_DOCS): $(STAMP_PY) doc/requirements.txt
	$(BIN)/python -m pip install -q -r doc/requirements.txt
	@touch $@

docs: $(STAMP_DOCS)
	rm -rf doc/build
	$(BIN)/sphinx-build -W --keep-going -b html doc/source doc/build/html

test: pep8 typecheck genconfig-check unit functional e2e e2e-next nova-tests onebox releasenotes docs

demo: $(STAMP_PY)
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf demo --workdir demo-work

# The host-side experiments, then fio inside guests (root; hours with the defaults:
# size it with e.g. GUEST_BENCH_ARGS="--runtime 10 --repeat 3 --layouts raw-prealloc").
GUEST_BENCH_ARGS ?=

bench: $(STAMP_PY)
	tools/install-debs --bindep $(BINDEP) --profile bench
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf bench --path $(CURDIR)/bench-work --output bench-results
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf bench guest --path $(CURDIR)/bench-work --output bench-results/guest $(GUEST_BENCH_ARGS)

bench-quick: $(STAMP_PY)
	$(BIN)/nova-disk-tuning --config-file etc/nova-disk-tuning/demo.conf bench --quick --path $(CURDIR)/bench-work --output bench-results

clean:
	rm -rf $(VENV) doc/build demo-work bench-work bench-results .pytest_cache .ruff_cache .hypothesis .stestr
