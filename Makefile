# bgp-lb. Quick start (Debian 12, root): `make demo`, `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORK := _work

.PHONY: help deps venv vng lint fmt test test-unit test-api test-kernel test-bgp test-faults demo clean
.PHONY: image config-disk test-image test-image-full
.PHONY: lab-up lab-down test-lab test-lab-pool test-lab-roll test-lab-extra
.PHONY: dashboards test-observability

help:
	@echo "make demo   - bring the ECMP lab up and show bgp-lb at work (POOL=0: without pool mode vs control)"
	@echo "make test   - install everything and run every test (lint, unit, kernel, BGP, image, observability, lab)"
	@echo "make lint | test-unit | test-api | test-kernel | test-bgp | test-faults"
	@echo "make lab-up [TOPO=containerlab/minimal.clab.yml] | lab-down | test-lab | test-lab-pool | test-lab-roll | test-lab-extra   (containerlab/README.md)"
	@echo "make image | test-image (3 boots, in make test) | test-image-full (4 more boots)"
	@echo "make dashboards (regenerate dashboards/*.json) | test-observability   (docs/observability.md)"

# System packages (Debian 12). Idempotent; re-run after a fresh machine.
APT_PKGS := frr frr-pythontools qemu-system-x86 linux-image-amd64 ipvsadm iputils-ping \
            nftables iproute2 curl procps kmod busybox-static prometheus \
            prometheus-alertmanager ovmf cloud-image-utils
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
	$(BIN)/pytest -q tests/unit --ignore-glob='tests/unit/test_fuzz_*'

# A real agent (fake dataplane + speaker) on a loopback port: schemathesis over its OpenAPI
# document (with/without the token), near-miss tokens, oversized requests, 2,000 connections.
# No root; ~1-2 min. The hypothesis fuzzers (config loader, ExaBGP lines) are in test-unit.
# Each suite's JUnit XML becomes bench/raw/reliability-<suite>.json (bench/reliability.py), the
# Reliability table of bench/RESULTS.md; the fuzzers (tests/unit/test_fuzz_*) run here, not in test-unit.
RELIABILITY = $(BIN)/python -m bench.reliability
test-api: venv
	@mkdir -p $(WORK)
	@rc=0; $(BIN)/pytest -q -p no:cacheprovider tests/unit/test_fuzz_*.py \
	  --junitxml=$(WORK)/junit-fuzz.xml || rc=$$?; \
	  $(RELIABILITY) fuzz $(WORK)/junit-fuzz.xml --command "make test-api" || true; \
	  $(BIN)/pytest -q -p no:cacheprovider tests/api --junitxml=$(WORK)/junit-api.xml || rc=$$?; \
	  $(RELIABILITY) api $(WORK)/junit-api.xml --command "make test-api" || true; exit $$rc

# Kernel tests (dummy links + IPVS): run directly if the running kernel has them, else in ONE
# virtme-ng VM booting Debian's kernel from /boot under TCG. virtme-ng lives in its own venv.
# ~2-4 min on an idle machine; skip the whole-agent test with KERNEL_TEST_ARGS='-k "not agent"'.
KERNEL_TEST_ARGS ?=
VNG_VENV := .venv-vng
$(VNG_VENV)/bin/vng:
	$(PY) -m venv $(VNG_VENV)
	$(VNG_VENV)/bin/pip install -q 'virtme-ng==1.42'
vng: $(VNG_VENV)/bin/vng

test-kernel: deps venv vng
	@mkdir -p $(WORK)
	PATH="$(CURDIR)/$(VNG_VENV)/bin:$$PATH" $(BIN)/python tests/harness/vm.py \
	  --log $(WORK)/test-kernel.log -- $(KERNEL_TEST_ARGS)

# BGP tests on the host, as root: FRR + ExaBGP in network namespaces named blt<pid>-*.
# Namespaces (and the processes in them) left by a crashed run are removed before and after.
test-bgp: deps venv
	@if [ "$$(id -u)" != 0 ]; then echo "test-bgp needs root (network namespaces, FRR)"; exit 1; fi
	@$(BIN)/python -m tests.harness.netns
	@rc=0; timeout 600 $(BIN)/pytest -m bgp tests/bgp -ra -s -q || rc=$$?; \
	  $(BIN)/python -m tests.harness.netns; exit $$rc

# Fault injection (tests/faults): the real agent + ExaBGP + FRR in namespaces on the host, as
# root; reloads, signals, ExaBGP/FRR/link faults, broken state_dir, agent SIGKILLs. 15 min at
# load 9-13 on 2 cores (the agent takes 9-15 s to start there); the timeout leaves room for that.
test-faults: deps venv
	@if [ "$$(id -u)" != 0 ]; then echo "test-faults needs root (network namespaces, FRR, mounts)"; exit 1; fi
	@$(BIN)/python -m tests.harness.netns
	@mkdir -p $(WORK)
	@rc=0; timeout 1500 $(BIN)/pytest -m faults tests/faults -p no:cacheprovider -ra -s -q \
	  --junitxml=$(WORK)/junit-faults.xml || rc=$$?; \
	  $(BIN)/python -m tests.harness.netns; \
	  $(RELIABILITY) faults $(WORK)/junit-faults.xml --command "make test-faults" || true; exit $$rc

# Appliance image (docs/image.md): Debian 12 + mkosi 14, one self-booting disk (BIOS/extlinux and
# UEFI/shim+GRUB on an ESP; test-image boots it under SeaBIOS and under OVMF from `ovmf`).
# image/build.sh installs mkosi and its helpers with apt; outputs go to $(WORK)/image/.
IMAGE_SRCS := $(shell find image agent/bgplb -type f -not -name "*.pyc" 2>/dev/null) \
              $(wildcard deploy/*/*) pyproject.toml
$(WORK)/image/bgp-lb.qcow2: $(IMAGE_SRCS) | venv
	image/build.sh
image: $(WORK)/image/bgp-lb.qcow2

# make config-disk CONFIG=node.yaml NETWORK=uplink.network KEYS=authorized_keys OUT=node1.iso
#   [FIREWALL=firewall.yaml] [FORMAT=iso|vfat]   (filesystem label BGPLB)
OUT ?= $(WORK)/config-disk.iso
config-disk:
	image/make-config-disk.sh --out "$(OUT)" $(if $(CONFIG),--config "$(CONFIG)") \
	  $(if $(NETWORK),--network "$(NETWORK)") $(if $(KEYS),--keys "$(KEYS)") \
	  $(if $(FIREWALL),--firewall "$(FIREWALL)") $(if $(FORMAT),--format "$(FORMAT)")

# Boots the image under qemu (TCG) on a tap in a namespace with FRR, configured the platforms' way
# by cidata seeds made with cloud-localds: (A) network-config v1 as Proxmox writes it, every
# check; (B) the v2 seed `bgp-lb fleet render` writes, short (BGPLB_IMAGE_FIRMWARE_V2=bios|uefi);
# (C) bad user-data -> unconfigured. 3 boots (docs/image.md "Tests").
test-image: deps venv image
	@if [ "$$(id -u)" != 0 ]; then echo "test-image needs root (namespaces, tap, FRR)"; exit 1; fi
	@$(BIN)/python -m tests.harness.netns
	@rc=0; timeout 1500 $(BIN)/pytest -m "image and not image_full" tests/image \
	  -p no:cacheprovider -ra -s -q || rc=$$?; \
	  $(BIN)/python -m tests.harness.netns; exit $$rc

# The boots test-image leaves out (NOT part of `make test`): UEFI (+ Secure Boot) with the configured
# node's setup, the BGPLB config disk (with a seed
# beside it that must change nothing), an OpenStack config-2 drive, no disk at all.
test-image-full: deps venv image
	@if [ "$$(id -u)" != 0 ]; then echo "test-image-full needs root (namespaces, tap, FRR)"; exit 1; fi
	@$(BIN)/python -m tests.harness.netns
	@rc=0; timeout 1500 $(BIN)/pytest -m image_full tests/image -p no:cacheprovider -ra -s -q \
	  || rc=$$?; $(BIN)/python -m tests.harness.netns; exit $$rc

# ECMP lab (containerlab/README.md): the lab runner (tests/lab) rebuilds containerlab/*.clab.yml
# with namespaces, FRR and bgp-lb agents; inside ONE virtme-ng VM (TCG) when this kernel has no
# IPVS/dummy. Everything lives in namespaces bgplab-<lab>-<node> + /run/bgplb-lab/<lab>.
TOPO ?= containerlab/ecmp.clab.yml
LAB_ENV := PATH="$(CURDIR)/$(VNG_VENV)/bin:$$PATH"
define need_root
	@if [ "$$(id -u)" != 0 ]; then echo "$@ needs root (network namespaces, FRR, IPVS)"; exit 1; fi
endef

POOL ?= 1
demo: deps venv vng
	$(need_root)
	@mkdir -p $(WORK)
	$(LAB_ENV) BGPLB_DEMO_POOL=$(POOL) $(BIN)/python -m tests.lab demo

lab-up: deps venv vng
	$(need_root)
	@mkdir -p $(WORK)
	$(LAB_ENV) $(BIN)/python -m tests.lab up $(TOPO)

lab-down: venv
	$(need_root)
	$(BIN)/python -m tests.lab down

test-lab: deps venv vng
	$(need_root)
	@mkdir -p $(WORK)
	@$(BIN)/python -m tests.lab down >/dev/null
	@rc=0; $(LAB_ENV) timeout 2200 $(BIN)/python -m tests.lab test -ra -q || rc=$$?; \
	  $(BIN)/python -m tests.lab down; exit $$rc

# The rolling upgrade of the ECMP lab (issue 16: bgp-lb fleet roll of the three nodes under client
# traffic, tests/lab/test_roll.py) on its own lab session: not part of `make test` (time budget).
test-lab-roll: deps venv vng
	$(need_root)
	@mkdir -p $(WORK)
	@$(BIN)/python -m tests.lab down >/dev/null
	@rc=0; LAB_TESTS=tests/lab/test_roll.py BGPLB_LAB_TIMEOUT=1500 $(LAB_ENV) \
	  timeout 1600 $(BIN)/python -m tests.lab test -ra -q -s || rc=$$?; \
	  $(BIN)/python -m tests.lab down; exit $$rc

# The lab tests make test-lab leaves out for time, on one lab session: the BFD silent node death
# (tests/lab/test_death.py) and the rolling upgrade (tests/lab/test_roll.py, last: it replaces
# every agent). Not part of `make test`.
test-lab-extra: deps venv vng
	$(need_root)
	@mkdir -p $(WORK)
	@$(BIN)/python -m tests.lab down >/dev/null
	@rc=0; LAB_TESTS="tests/lab/test_death.py tests/lab/test_roll.py" BGPLB_LAB_TIMEOUT=1800 \
	  $(LAB_ENV) timeout 1900 $(BIN)/python -m tests.lab test -ra -q -s || rc=$$?; \
	  $(BIN)/python -m tests.lab down; exit $$rc

# The pool lab alone (issue 15: pool mode vs its control, containerlab/pool.clab.yml; also the
# first part of `make test-lab`): ~6 min of one TCG VM on a quiet host.
test-lab-pool: deps venv vng
	$(need_root)
	@mkdir -p $(WORK)
	@$(BIN)/python -m tests.lab down >/dev/null
	@rc=0; LAB_TESTS=tests/lab/test_pool.py BGPLB_LAB_TIMEOUT=1200 $(LAB_ENV) \
	  timeout 1300 $(BIN)/python -m tests.lab test -ra -q || rc=$$?; \
	  $(BIN)/python -m tests.lab down; exit $$rc

# Observability (docs/observability.md): dashboards/ JSON is generated; CI fails when stale.
dashboards: venv
	$(BIN)/python dashboards/generate.py

# Offline checks + the live stack on this host (2 agents, FRR, Prometheus in namespaces).
test-observability: deps venv
	$(need_root)
	@$(BIN)/python -m tests.harness.netns
	@rc=0; timeout 300 $(BIN)/pytest -p no:cacheprovider -m observability tests/observability \
	  -ra -q || rc=$$?; $(BIN)/python -m tests.harness.netns; exit $$rc

# test-lab (the ECMP lab + Prometheus in one TCG VM, ~4 min idle) is the last step: on an idle
# host 8/8; under heavy host load (load average > 5 on 2 cores) TCG stretches its timings past the
# acceptance bounds (withdraw within fall x interval + 2 s, >= 20 requests/s): containerlab/README.md.
test: deps venv lint test-unit test-api test-kernel test-bgp test-faults test-image test-observability test-lab

clean:
	rm -rf $(WORK) $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Benchmarks (bench/, results in bench/results.json + bench/RESULTS.md): root, host namespaces,
# about an hour; NOT part of `make test`. nice -15 keeps other load on the box from skewing times.
.PHONY: bench
bench: deps venv
	$(need_root)
	@$(BIN)/python -m tests.harness.netns
	nice -n -15 $(BIN)/python -m bench.convergence
	nice -n -15 $(BIN)/python -m bench.node_death
	nice -n -15 $(BIN)/python -m bench.scale
	nice -n -15 $(BIN)/python -m bench.maintenance
	$(BIN)/python -m bench.report

# Soak (bench/soak.py; root, ~35 min; NOT part of `make test`): 30 min at 1,000 services with a
# reload every 30 s, a drain/undrain every 60 s, flapping backends, /metrics every second and an
# independent checker of r1's RIB and FIB (per-change lateness, wrong episodes: bench/NOTES.md).
# A trial that writes no records (raw data to bench/raw/soak-trial.json):
# SOAK_ARGS='--duration 300 --warmup 90 --no-save'.
SOAK_ARGS ?=
.PHONY: soak
soak: deps venv
	$(need_root)
	@$(BIN)/python -m tests.harness.netns
	@rc=0; nice -n -15 $(BIN)/python -m bench.soak $(SOAK_ARGS) || rc=$$?; \
	  $(BIN)/python -m tests.harness.netns; $(BIN)/python -m bench.report; exit $$rc
