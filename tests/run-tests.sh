#!/bin/bash
# run-tests.sh QEMU_SRC QEMU_BUILD GUEST_DIR [SUITE...]: run softdev's test
# suites (all by default): unit, qtest, iotests, docs, stock, guest, xen (crash,
# the kill -9 torture, runs inside iotests and alone on request).  Each
# suite prints its own output; the last line counts suites as 'N passed,
# N failed'.  The xen suite boots the Xen bed in XEN_BED_DIR (default
# build/xen/bed, made by tests/xen/build-xen-bed.sh).
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
QEMU_SRC=$(cd "$1" && pwd)
QEMU_BUILD=$(cd "$2" && pwd)
GUEST_DIR=$(cd "$3" && pwd)
shift 3
SUITES=${*:-unit qtest iotests docs stock guest xen}
XEN_BED_DIR=${XEN_BED_DIR:-$SRC/build/xen/bed}
PY=/usr/bin/python3

# QEMU's own quick iotests for raw must keep passing with softdev built
# in.  160 is left out: it fails the same way in Debian's QEMU without
# softdev (Debian's qemu-img-options.patch changes 'qemu-img dd').
STOCK_IOTESTS_SKIP="160"

passed=0
failed=0
failed_names=()
failed_logs=()
LOG_DIR=$SRC/build/test-logs
mkdir -p "$LOG_DIR"

# Each suite's output also goes to build/test-logs/N.log, so that the end
# of the run can say why a suite failed: CI shows only the last lines.
suite() {
    local name=$1
    shift
    echo "=== $name ==="
    local t0=$SECONDS
    local log=$LOG_DIR/$((passed + failed)).log
    "$@" 2>&1 | tee "$log"
    if [ "${PIPESTATUS[0]}" -eq 0 ]; then
        echo "=== $name: PASS ($((SECONDS - t0)) s) ==="
        passed=$((passed + 1))
    else
        echo "=== $name: FAIL ($((SECONDS - t0)) s) ==="
        failed=$((failed + 1))
        failed_names+=("$name")
        failed_logs+=("$log")
    fi
}

# The first lines of a failed suite's log that look like the reason (a
# failing test, a diff against the expected output, an exception), then
# its last lines.
why() {
    echo "--- why: $1 (whole log: $2)"
    grep -E -m 12 '(FAIL|[Ff]ailed|[Ee]rror|Traceback|mismatch|^[-+][^-+])' "$2" |
        grep -v '^=== ' | cut -c1-220
    echo "... last lines:"
    tail -n 4 "$2" | cut -c1-220
}

run_unit() {
    "$SRC/tests/unit/run-c-tests.sh" "$SRC" &&
    (cd "$SRC" &&
     SANITIZE=1 $PY -m unittest discover -s tests/unit -p 'test_*.py' -v) &&
    "$SRC/tests/fuzz/run-fuzz.sh" "$SRC" 15
}

run_qtest() {
    (cd "$QEMU_BUILD" &&
     QTEST_QEMU_BINARY=./qemu-system-x86_64 QTEST_QEMU_IMG=./qemu-img \
     QTEST_QEMU_STORAGE_DAEMON_BINARY=./storage-daemon/qemu-storage-daemon \
     timeout 300 ./tests/qtest/softdev-test --tap -k)
}

iotests_check() {
    (cd "$QEMU_BUILD/tests/qemu-iotests" &&
     $PY "$QEMU_SRC/tests/qemu-iotests/check" \
         --source-dir "$QEMU_SRC/tests/qemu-iotests" \
         --build-dir "$QEMU_BUILD/tests/qemu-iotests" "$@")
}

run_iotests() {
    iotests_check -raw softdev-stack softdev-tap softdev-tap-reconnect \
        softdev-reopen softdev-safe-defaults softdev-crypt softdev-compress \
        softdev-cas softdev-timetravel softdev-fault softdev-fault-cache &&
    run_crash "${CRASH_TRIALS:-50}"
}

# kill -9 torture of the image formats (tests/crash/crash-torture.py):
# small clusters and segments, so that trials recycle segments and write
# checkpoints.  Discards of partial clusters keep the data (advisory).
# softdev-timetravel: a raw disk through it with a 64 MiB journal, so that
# retention compacts (and drops all) again and again; marks all along,
# checked through views after each crash, and the newest point against
# the disk.
# Online compaction (softdev-compact over QMP) runs again and again
# during the workload.  softdev-cas: half the writes share a few contents,
# so that chunks are shared, lose their last reference and are collected.
run_crash() {
    $PY "$SRC/tests/crash/crash-torture.py" --qemu-build "$QEMU_BUILD" \
        --format softdev-compress --create-opts cluster-size=16k,segment-size=1M \
        --trim-may-keep --compact --trials "$1" &&
    $PY "$SRC/tests/crash/crash-torture.py" --qemu-build "$QEMU_BUILD" \
        --format softdev-cas --create-opts chunk-size=4k,segment-size=1M \
        --dedup 0.5 --trim-may-keep --compact --trials "$1" &&
    $PY "$SRC/tests/crash/crash-torture.py" --qemu-build "$QEMU_BUILD" \
        --format raw --timetravel $((64 << 20)) --size $((16 << 20)) \
        --trials "$1"
}

# The code blocks of the guides, run against this build
run_docs() {
    $PY "$SRC/tests/docs/test-doc-blocks.py" --qemu-build "$QEMU_BUILD"
}

run_stock() {
    local tests
    tests=$(iotests_check -raw -g quick -n | grep -vxF "$STOCK_IOTESTS_SKIP" |
            grep -v '^softdev-')
    # shellcheck disable=SC2086
    iotests_check -raw $tests
}

run_guest() {
    timeout 1200 $PY "$SRC/tests/guest/test-live-insert.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-tap.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-tap-crash.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-isolated-vm.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-crypt.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-compress.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-cas.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-timetravel.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR" &&
    timeout 1200 $PY "$SRC/tests/guest/test-fault.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --guest-dir "$GUEST_DIR"
}

run_xen() {
    timeout 600 $PY "$SRC/tests/xen/test-xen-bed-fpu.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --bed-dir "$XEN_BED_DIR" &&
    timeout 600 $PY "$SRC/tests/xen/test-xen-softdev.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --bed-dir "$XEN_BED_DIR" &&
    timeout 600 $PY "$SRC/tests/xen/test-xen-net.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --bed-dir "$XEN_BED_DIR" \
        --log "$SRC/build/xen/test-xen-net.log" &&
    timeout 900 $PY "$SRC/tests/xen/test-xen-driver-domain.py" \
        --qemu "$QEMU_BUILD/qemu-system-x86_64" --bed-dir "$XEN_BED_DIR" \
        --workdir "$SRC/build/xen/driver-domain"
}

for s in $SUITES; do
    case $s in
    unit) suite "unit tests (trace reader, tap protocol)" run_unit ;;
    qtest) suite "qtest softdev-test (QMP insert/remove/query)" run_qtest ;;
    docs) suite "the guides' code blocks (user guide, docs/devel)" run_docs ;;
    iotests) suite "iotests softdev-stack, -tap, -tap-reconnect, -reopen, -safe-defaults, -crypt, -compress, -cas, -timetravel, -fault, -fault-cache; kill -9 torture" \
        run_iotests ;;
    stock) suite "stock QEMU iotests (no regressions from hook patches)" \
        run_stock ;;
    guest) suite "guest test bed (live insert/remove; C and Python taps; 20 SIGKILLs; soft devices in a VM; softdev-crypt and dm-crypt; ext4 on softdev-compress and softdev-cas; softdev-timetravel marks, views, revert; softdev-fault rules, power cut, ext4 crash states)" \
        run_guest ;;
    xen) suite "Xen 4.17 test bed (soft devices on PV disks, live insert/remove, PV NIC, a driver domain)" \
        run_xen ;;
    crash) suite "kill -9 torture of softdev-compress, softdev-cas and softdev-timetravel (${CRASH_TRIALS:-50} trials each)" \
        run_crash "${CRASH_TRIALS:-50}" ;;
    *) echo "run-tests.sh: unknown suite '$s'" >&2; exit 2 ;;
    esac
done

echo
if [ "$failed" -ne 0 ]; then
    for i in "${!failed_logs[@]}"; do
        why "${failed_names[$i]}" "${failed_logs[$i]}"
    done
    echo "failed suites: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
