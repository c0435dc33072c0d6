# edgebroker: build, run and test.
#   make run    create .venv if missing, install the broker alone, start it
#   make test   install everything the tests need, type-check, run the suite
# Works on a fresh Debian 12 machine (as root, or as a user with sudo).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# Keep the steps of `make test` in order even under -j.
.NOTPARALLEL:

PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# Separate stamps: `make run` installs the broker alone (it needs no
# third-party package, and some test extras have no wheel for a Raspberry
# Pi's aarch64/armv7); `make test` after it adds the test extras.
RUN_STAMP := $(VENV)/.installed-run
STAMP   := $(VENV)/.installed
STUBS   := build/mpy-stubs
STUBS_STAMP := $(STUBS)/.installed

# Debian packages the test suite needs (one list). libcoap3-bin:
# coap-client-notls, an independent CoAP peer; rabbitmq-server: the uplink's
# peer, started by the tests as a private node on free ports. chromium,
# chromium-driver: the status page's test (tests/integration/test_25_status_page.py)
# loads it in headless Chromium through selenium. openssl: the CLI makes the
# TLS tests' certificates (tests/integration/tlscerts.py).
APT_PACKAGES ?= mosquitto mosquitto-clients socat openssl libcoap3-bin rabbitmq-server chromium chromium-driver
# `make firmware` (and `make test`, which boots the image): the ARM toolchain
# and QEMU for MicroPython's image for qemu-system-arm's mps2-an385
# (docs/firmware.md).
FIRMWARE_APT ?= gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
# Installed for their binaries only (the tests and `make bench` run
# /usr/sbin/mosquitto themselves): their service, which would hold port 1883
# from the next boot on, is stopped and disabled when this Makefile installed
# them.
APT_NO_SERVICE := mosquitto rabbitmq-server
# Needed only to create the venv on a bare Debian.
VENV_APT_PACKAGES := python3 python3-venv

# Local defaults for `make run`; override e.g. `make run RUN_ARGS="--port 1884"`.
RUN_ARGS ?= --bind 127.0.0.1 --port 1883 --data ./data
PYTEST_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Installs the Debian packages given as arguments that are not installed yet;
# does nothing (no apt-get update) when all are present. A policy-rc.d keeps
# Debian from starting their services during the install; it is removed
# afterwards (if this created it: left, it would stop every later package's
# service from starting), install failed or not.
define apt_install
missing=""; \
for p in $(1); do \
  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo ">> installing Debian packages:$$missing"; \
  policy=""; \
  if [ ! -e /usr/sbin/policy-rc.d ]; then \
    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
    $(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
    policy=1; \
  fi; \
  rc=0; \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends $$missing || rc=$$?; \
  if [ -n "$$policy" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; fi; \
  if [ "$$rc" != 0 ]; then exit "$$rc"; fi; \
  for s in $(APT_NO_SERVICE); do \
    case " $$missing " in *" $$s "*) \
      echo ">> $$s: service stopped and disabled (only its binaries are used)"; \
      $(SUDO) systemctl disable "$$s" >/dev/null 2>&1 || $(SUDO) update-rc.d "$$s" disable >/dev/null 2>&1 || true; \
      $(SUDO) service "$$s" stop >/dev/null 2>&1 || true; \
    esac; \
  done; \
fi
endef

.PHONY: help run test bench bench-store fleet soak typecheck sizes deps stubs clean .venv install-service firmware firmware-deps vendor-mqttjs

help:
	@echo "make run        start edgebroker locally (MQTT 127.0.0.1:1883, data in ./data)"
	@echo "make test       install deps, type-check edge/, print module sizes, run pytest"
	@echo "make bench      edgebroker vs mosquitto vs amqtt, side by side (BENCH_ARGS=--quick for a short pass)"
	@echo "make bench-store  flash persistence: bytes/message, syncs/s, on vs off, 100-kill crash run"
	@echo "make firmware   MicroPython 1.28.0 + edge/ frozen, for QEMU's mps2-an385 (build/firmware/qemu/firmware.elf)"
	@echo "make soak       the 64 KiB board's soak (tests/integration/test_06) for SOAK_SECONDS (600); make test runs 30 s"
	@echo "make fleet      fleet soak: 300 sensors on CPython + 6 firmware sensors on the 64 KiB board, harsh links, 300 s each (FLEET_ARGS)"
	@echo "make typecheck  mypy edge/ against MicroPython's stubs"
	@echo "make sizes      source and .mpy size of each edge/ module"
	@echo "make deps       install the Debian packages the tests need ($(APT_PACKAGES))"
	@echo "make .venv      create .venv and install the package with test extras"
	@echo "make clean      remove .venv, build/ and caches (keeps ./data)"
	@echo "make install-service  install edgebroker as a systemd service (root; docs/gateway.md)"
	@echo "make vendor-mqttjs  fetch MQTT.js again (npm) into tests/integration/mqttjs/ (not run by the tests)"

# ---------------------------------------------------------------- venv
.venv: $(STAMP)

# The venv itself (order-only below: its python's date means nothing).
$(PY):
	@rm -rf $(VENV)
	@if ! $(PYTHON3) -m venv $(VENV) 2>/dev/null; then \
	  echo ">> '$(PYTHON3) -m venv' failed; installing Debian's python3-venv"; \
	  rm -rf $(VENV); \
	  $(call apt_install,$(VENV_APT_PACKAGES)); \
	  $(PYTHON3) -m venv $(VENV); \
	fi

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e .
	@touch $@

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	@touch $@

# MicroPython type stubs live outside the venv's site-packages so they never
# shadow CPython's typeshed for anything else.
stubs: $(STUBS_STAMP)

$(STUBS_STAMP): $(STAMP)
	rm -rf $(STUBS)
	$(PIP) install -q --no-compile --target $(STUBS) micropython-esp32-stubs
	@touch $@

# ---------------------------------------------------------------- targets
run: $(RUN_STAMP)
	mkdir -p data
	$(VENV)/bin/edgebroker run $(RUN_ARGS)

deps:
	@$(call apt_install,$(APT_PACKAGES))

firmware-deps:
	@$(call apt_install,$(FIRMWARE_APT))

# MicroPython's source: MICROPYTHON_SRC=DIR, else ../shared/vendor's tarball,
# else MicroPython's v1.28.0 release (firmware/qemu/build.sh). Incremental.
firmware: firmware-deps
	bash firmware/qemu/build.sh

typecheck: $(STUBS_STAMP)
	$(VENV)/bin/ruff check edge gateway tools tests firmware
	$(PY) -m mypy

sizes: $(STAMP)
	$(PY) tools/modsizes.py

# pytest runs last so its summary is the last line of the output.
test: deps firmware $(STAMP) typecheck sizes
	$(PY) -m pytest $(PYTEST_ARGS)

# The benchmark: amqtt (pinned: the version the issue's figures were measured
# with) and matplotlib come only with it, not with the test dependencies.
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -e '.[bench]'
	@touch $@

bench: deps $(BENCH_STAMP)
	$(PY) -m tools.bench $(BENCH_ARGS)
	$(PY) -m tools.bench.store
	$(PY) -m tools.bench.coap $(filter --quick,$(BENCH_ARGS))
	$(PY) -m tools.bench.uplink $(filter --quick,$(BENCH_ARGS))

# Flash persistence: bytes/message, syncs/s, throughput on vs off, then the
# crash harness with 100 SIGKILLs (issue #4).
bench-store: $(STAMP)
	$(PY) -m tools.bench.store --kills 100

# The systemd service (docs/gateway.md "Install as a service"): the broker
# with its web listeners in its own venv under SERVICE_PREFIX, a system user
# `edgebroker`, the config in /etc/edgebroker (installed once, never
# overwritten), the unit enabled and started. Not run by the tests (they
# check the unit with systemd-analyze verify).
SERVICE_PREFIX ?= /opt/edgebroker
SERVICE_CONFIG := /etc/edgebroker/edgebroker.toml
install-service:
	$(SUDO) $(PYTHON3) -m venv $(SERVICE_PREFIX)
	$(SUDO) $(SERVICE_PREFIX)/bin/pip install -q '.[gateway]'
	id -u edgebroker >/dev/null 2>&1 || $(SUDO) useradd --system --home-dir /var/lib/edgebroker \
	  --no-create-home --shell /usr/sbin/nologin edgebroker
	$(SUDO) install -d -m 0755 /etc/edgebroker
	[ -e $(SERVICE_CONFIG) ] || $(SUDO) install -m 0644 gateway/edgebroker.toml $(SERVICE_CONFIG)
	$(SUDO) $(SERVICE_PREFIX)/bin/edgebroker check --config $(SERVICE_CONFIG)
	sed 's|/opt/edgebroker|$(SERVICE_PREFIX)|g' gateway/edgebroker.service \
	  | $(SUDO) tee /etc/systemd/system/edgebroker.service >/dev/null
	$(SUDO) systemctl daemon-reload
	$(SUDO) systemctl enable --now edgebroker
	@echo ">> edgebroker installed: systemctl status edgebroker; journalctl -u edgebroker -f"

# MQTT.js for the browser test (tests/integration/test_22_mqttjs_browser.py):
# its browser bundle and licence, and the licences of the code its bundle
# holds that is not MIT (@jspm/core's Node polyfills, Apache-2.0; ieee754,
# BSD-3-Clause), fetched from the npm registry with `npm pack`, committed in tests/integration/mqttjs/ (its README says which
# version): the tests load the committed file and never run this.
MQTTJS_VERSION ?= 5
MQTTJS_DIR := tests/integration/mqttjs
vendor-mqttjs:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  (cd "$$tmp" && npm pack -q mqtt@$(MQTTJS_VERSION) >/dev/null && tar xzf mqtt-*.tgz); \
	  cp "$$tmp/package/dist/mqtt.min.js" "$$tmp/package/LICENSE.md" $(MQTTJS_DIR)/; \
	  for dep in @jspm/core@2:jspm-core ieee754:ieee754; do \
	    d=$$(mktemp -d); (cd "$$d" && npm pack -q "$${dep%%:*}" >/dev/null && tar xzf *.tgz); \
	    cp "$$d/package/LICENSE" "$(MQTTJS_DIR)/LICENSE-$${dep##*:}"; rm -rf "$$d"; \
	  done; \
	  echo ">> MQTT.js $$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$$tmp/package/package.json" | head -1)" \
	    "in $(MQTTJS_DIR)/ (tarball sha256 $$(sha256sum "$$tmp"/mqtt-*.tgz | cut -d' ' -f1)): update its README"

# The fleet soak (docs/fleet.md): longer than test_18's runs, not a test.
# Reports, JSON and plots in build/fleet/. FLEET_ARGS e.g. "--seconds 60".
FLEET_ARGS ?=
fleet: $(STAMP)
	$(PY) -m tools.fleetsoak $(FLEET_ARGS)

# The 64 KiB board's soak at length (make test runs it for 30 s).
SOAK_SECONDS ?= 600
soak: $(STAMP)
	EDGE_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q tests/integration/test_06_load_micropython.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.mpy' -type f -delete
