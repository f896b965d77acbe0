# bgp-lb. Quick start (Debian 12, root): `make demo`, `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORK := _work

.PHONY: help deps venv lint fmt test test-unit test-kernel test-bgp demo clean

help:
	@echo "make demo   - bring the ECMP lab up and show bgp-lb at work"
	@echo "make test   - install everything and run every test (lint, unit, kernel, BGP)"
	@echo "make lint | test-unit | test-kernel | test-bgp"

# System packages (Debian 12). Idempotent; re-run after a fresh machine.
APT_PKGS := frr frr-pythontools qemu-system-x86 linux-image-amd64 ipvsadm iputils-ping \
            nftables iproute2 curl procps kmod busybox-static
$(WORK)/.deps-stamp: Makefile
	@mkdir -p $(WORK)
	@echo "==> installing system packages: $(APT_PKGS)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PKGS)
	@touch $@
deps: $(WORK)/.deps-stamp

$(BIN)/.installed: pyproject.toml
	@echo "==> creating $(VENV) and installing bgp-lb with its dev dependencies"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@
venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check agent tests
	$(BIN)/ruff format --check agent tests
	$(BIN)/mypy --strict agent/bgplb
	@for f in examples/*.yaml examples/*.json; do \
	  echo "==> bgp-lb check-config $$f"; $(BIN)/bgp-lb check-config $$f || exit 1; done

fmt: venv
	$(BIN)/ruff format agent tests
	$(BIN)/ruff check --fix agent tests

test-unit: venv
	$(BIN)/pytest -q tests/unit

test: deps venv lint test-unit test-kernel test-bgp

clean:
	rm -rf $(WORK) $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
