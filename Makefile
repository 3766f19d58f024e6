# softdev: soft devices for QEMU and Xen.
#
#   make          configure if needed, then build QEMU with softdev
#   make check    build and run every test
#   make run      build and run the main demo (a guest on a soft-device stack)
#   make bench    build and run the benchmarks
#   make bench-xen  the Xen test bed's disk benchmark (PV guest, TCG)
#   make install  install under the configured prefix (default
#                 /usr/local/softdev, beside any distribution QEMU)
#
# SPDX-License-Identifier: GPL-2.0-or-later

SHELL := /bin/bash
SRC := $(CURDIR)

-include config.mak

PY := /usr/bin/python3
NINJA := ninja
# ccache: hits survive a fresh clone in another directory.
export CCACHE_BASEDIR := $(SRC)
export CCACHE_NOHASHDIR := 1

QEMU_TARGETS := qemu-system-x86_64 qemu-img qemu-io qemu-nbd \
	storage-daemon/qemu-storage-daemon tests/qtest/softdev-test

GUEST_DIR := $(SRC)/build/guest
XEN_BED_DIR := $(SRC)/build/xen/bed
export XEN_BED_DIR

.PHONY: all build check check-qtest check-iotests check-stock check-unit \
	check-docs check-guest check-xen \
	run bench install clean distclean guest xen-bed fuzz fuzz-long

all: build

# Re-run configure (with the options it was given) when it changes.
config.mak: configure patches/qemu-source.sha256
	./configure $(CONFIGURE_ARGS)

build: config.mak
	$(SRC)/scripts/overlay.sh $(SRC) $(QEMU_SRC)
	$(NINJA) -C $(QEMU_BUILD) $(QEMU_TARGETS)
	$(SRC)/scripts/link-firmware.sh $(QEMU_BUILD)/qemu-bundle$(PREFIX)/share/qemu

guest: build
	$(SRC)/tests/guest/build-guest.sh $(GUEST_DIR)
	$(SRC)/tests/guest/build-devvm.sh $(GUEST_DIR)

xen-bed:
	$(SRC)/tests/xen/build-xen-bed.sh $(XEN_BED_DIR)

check: build guest xen-bed
	$(SRC)/tests/run-tests.sh $(QEMU_SRC) $(QEMU_BUILD) $(GUEST_DIR)

# Parts of 'make check', for development
check-unit:
	$(SRC)/tests/unit/run-c-tests.sh $(SRC)
	cd $(SRC) && SANITIZE=1 $(PY) -m unittest discover -s tests/unit \
		-p 'test_*.py' -v

check-qtest check-iotests check-docs check-stock check-guest check-xen: \
		build guest \
		xen-bed
	$(SRC)/tests/run-tests.sh $(QEMU_SRC) $(QEMU_BUILD) $(GUEST_DIR) \
		$(patsubst check-%,%,$@)

run: build guest
	$(PY) $(SRC)/scripts/softdev-demo.py --qemu-build $(QEMU_BUILD) \
		--guest $(GUEST_DIR)

bench: build
	$(SRC)/bench/run-bench.sh $(QEMU_BUILD)
	$(PY) $(SRC)/bench/bench-crypt.py --qemu-build $(QEMU_BUILD)
	$(PY) $(SRC)/bench/bench-compress.py --qemu-build $(QEMU_BUILD)
	$(PY) $(SRC)/bench/bench-cas.py --qemu-build $(QEMU_BUILD)
	$(PY) $(SRC)/bench/bench-timetravel.py --qemu-build $(QEMU_BUILD)
	$(PY) $(SRC)/bench/bench-fault.py --qemu-build $(QEMU_BUILD)

# A PV domU's dd throughput on qdisk disks with and without a passthrough
# soft device, in the Xen test bed (not part of 'make check')
.PHONY: bench-xen
bench-xen: build xen-bed
	$(PY) $(SRC)/tests/xen/bench-xen-disk.py \
		--qemu $(QEMU_BUILD)/qemu-system-x86_64 --bed-dir $(XEN_BED_DIR) \
		--json $(SRC)/build/bench/xen-disk.json

install: build
	$(NINJA) -C $(QEMU_BUILD) install
	$(SRC)/scripts/link-firmware.sh $(DESTDIR)$(PREFIX)/share/qemu
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(SRC)/scripts/softdev_trace.py $(DESTDIR)$(PREFIX)/bin/softdev-trace-dump
	$(SRC)/libsoftdev/install.sh '$(PREFIX)' '$(DESTDIR)'
	install -d $(DESTDIR)$(PREFIX)/lib/python3/dist-packages/softdev/examples
	install -m 0644 $(SRC)/python/softdev/*.py \
		$(DESTDIR)$(PREFIX)/lib/python3/dist-packages/softdev
	install -m 0644 $(SRC)/scripts/softdev_trace.py \
		$(DESTDIR)$(PREFIX)/lib/python3/dist-packages/softdev_trace.py
	install -m 0644 $(SRC)/python/softdev/examples/*.py \
		$(DESTDIR)$(PREFIX)/lib/python3/dist-packages/softdev/examples

# Fuzz both sides of the tap protocol with libFuzzer (20 s per target)
fuzz:
	$(SRC)/tests/fuzz/run-fuzz.sh $(SRC) 20

# Under an hour: 10 M executions each of the per-input targets, fuzz-conn
# (3.8-11 k/s as its corpus grows: 43 minutes here) at most 50
# minutes, fuzz-client (180-350 k/s) at most 3; the threaded end-to-end
# fuzz-device (about 500/s) 5 minutes; fuzz-slog (15 k/s) 10 minutes
fuzz-long:
	$(SRC)/tests/fuzz/run-fuzz.sh $(SRC) \
		conn=3000/10000000,client=180/10000000,device=300,slog=600

# The kill -9 torture of the image formats, 2000 trials of each (about 90
# minutes)
.PHONY: check-long
check-long: build
	CRASH_TRIALS=2000 $(SRC)/tests/run-tests.sh $(QEMU_SRC) $(QEMU_BUILD) \
		$(GUEST_DIR) crash

clean:
	-[ -f config.mak ] && $(NINJA) -C $(QEMU_BUILD) clean

distclean:
	rm -rf build config.mak
