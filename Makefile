# backurne — the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need (Debian packages, a pinned virtualenv, the two-cluster Ceph lab) is
# installed or started by these targets themselves.

SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/collections
COLLECTION := collections/ansible_collections/backurne/rbd

.PHONY: help deps venv lab-up lab-down lab-status demo test unit sanity lint integration molecule compat compat-ceph bench bench-full clean build

help:
	@echo "make demo   - install, start the lab, back up demo images, show the report"
	@echo "make test   - install, start the lab, run every suite (unit, sanity, lint, integration, molecule)"
	@echo "make compat - node Python 3.9/3.13 and ansible-core 2.16-2.19 on the lab (also in make test)"
	@echo "make bench  - benchmarks on the lab (ratios, not assertions); make bench-full adds N=1000"
	@echo "make lab-up | lab-down | lab-status"

deps:
	@bash scripts/install-deps.sh

$(VENV)/.installed: requirements/dev.in requirements/constraints.txt pyproject.toml
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade 'pip==24.2'
	$(VENV)/bin/pip install -q -r requirements/dev.in -c requirements/constraints.txt
	# The backurne CLI / backurne-api entry points, editable: they run this tree's code.
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

venv: deps $(VENV)/.installed

lab-up: deps
	tests/lab/lab.sh up
lab-down:
	tests/lab/lab.sh down
lab-status:
	tests/lab/lab.sh status

demo: venv
	bash scripts/demo.sh

test: venv
	bash scripts/test.sh all

unit: venv
	bash scripts/test.sh unit
sanity: venv
	bash scripts/test.sh sanity
lint: venv
	bash scripts/test.sh lint
integration: venv
	bash scripts/test.sh integration
molecule: venv
	bash scripts/test.sh molecule
# core integration tests on live Ceph 18 -> backup 16 and live 20 -> backup 18 (chroots)
compat-ceph: venv
	bash scripts/test.sh compat-ceph
# Node Python 3.9/3.13 and ansible-core 2.16-2.19 (venvs cached in .venv-compat/); part of `make test`.
compat: venv
	bash scripts/test.sh compat

bench: venv
	bash bench/run.sh

bench-full: venv
	bash bench/run.sh --full

build: venv
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/ $(COLLECTION)

clean:
	rm -rf build $(COLLECTION)/tests/output .pytest_cache
