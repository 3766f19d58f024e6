#!/bin/bash
# run-bench.sh QEMU_BUILD: measure, with 'qemu-img bench' on a page-cached
# 1 GiB image, the block-layer overhead of softdev-trace (no trace file)
# against a bare file node, of softdev-tap with libsoftdev's C passthrough
# against softdev-trace and against Debian's nbdkit, and of libsoftdev's C
# XOR example over softdev-tap against the in-process softdev-xor.  Every
# headline stack runs as a user would run it: default options, no CPU
# pinning.  Prints a table per workload with ratios and PASS/MISS against
# the targets, and writes build/bench/results.json.  Exits non-zero only
# if a run failed.
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# What is measured
#   Stacks, all opened by 'qemu-img bench' with the same cache mode
#   (-t writeback, i.e. cache.direct=off) and the same AIO mode: -i io_uring
#   (the fastest here, about twice aio=threads on page-cached 4 KiB
#   requests), or -i threads if io_uring cannot be used:
#     bare           json:{"driver":"file","filename":IMG}
#     softdev-trace  json:{"driver":"softdev-trace",
#                          "file":{"driver":"file","filename":IMG}}
#     tap-c          json:{"driver":"softdev-tap","server":{...},
#                          "file":{"driver":"file","filename":IMG}}
#                    with libsoftdev's C passthrough example, default
#                    options (its read and write callbacks run for every
#                    request and forward it; unix socket, shared memory,
#                    rings; it declares that it does not read write data,
#                    leaves the node below alone and forwards writes
#                    unchanged, so QEMU skips the copy of writes and starts
#                    reads and writes below early)
#     tap-c-nopoll   the same process with --poll-us 0: it never polls
#                    and sleeps after each batch until QEMU KICKs it
#                    (what its default adaptive polling saves;
#                    informational)
#     tap-py         the same with the Python passthrough example
#                    (informational)
#     nbdkit         json:{"driver":"nbd","server":{"type":"unix",...}}
#                    served by 'nbdkit -U SOCK file IMG' (its defaults)
#     softdev-xor    json:{"driver":"softdev-xor","key":XOR_KEY,
#                          "file":{"driver":"file","filename":IMG}}
#     tap-xor        softdev-tap as for tap-c, served by libsoftdev's C XOR
#                    example with the same key, default options: a device
#                    that transforms data, so QEMU copies every write into
#                    shared memory and waits for the process before it
#                    reads or writes below
#   The nbd stack is given as json rather than nbd+unix:///?socket=SOCK so
#   that no probed raw format node is added: every stack is exactly one
#   protocol node, plus the soft device.
#
#   Workloads:
#     rand-read   4 KiB reads,  queue depth 32
#     rand-write  4 KiB writes, queue depth 32
#     seq-read    1 MiB reads,  queue depth BENCH_SEQ_DEPTH (8)
#     seq-write   1 MiB writes, queue depth BENCH_SEQ_DEPTH (8)
#   'qemu-img bench' has no random mode: request k goes to offset
#   (k * STEP) mod IMAGE_SIZE.  For the "random" workloads STEP is the odd
#   number of 4 KiB blocks nearest to 0.618 (golden ratio) of the image, so
#   consecutive requests land far apart with no locality, and since STEP is
#   coprime with the block count every 4 KiB block is visited exactly once
#   per cycle.  It is a deterministic scattered permutation, not random,
#   and identical for every stack, which is what the ratios need.  Writes
#   use a non-zero pattern byte.
#
#   The image is a 1 GiB file filled with non-zero data, so reads hit real
#   data, not holes.  It lives in a temporary directory on tmpfs
#   (/dev/shm) if that has room, else in ${TMPDIR:-/tmp}; BENCH_DIR
#   overrides.  Either way it is page-cached (read once before measuring),
#   so the numbers are the overhead of the QEMU block layer and of each
#   stack on page-cached data, not of any disk.  tmpfs is preferred because
#   on a disk file system buffered 4 KiB writes depend on the file's
#   page-cache history (folio sizes, journalled mtime updates) and can vary
#   tenfold, and each write run's flush at close goes to the disk.  The
#   flush at close is outside the timed section in any case.
#
# Method
#   Each workload is first run once on every stack (warm-up and smoke
#   test), which calibrates the request count so a run lasts about
#   BENCH_SECONDS.  Two pairs of stacks do exactly the same work: bare and
#   softdev-trace use the count calibrated on bare, softdev-xor and tap-xor
#   the count calibrated on softdev-xor; every other stack gets its own.
#   Then BENCH_REPS repetitions run every workload on every stack; the
#   stacks of each pair always run back to back, in alternating order, to
#   cancel drift, and tap-c runs next to the bare/softdev-trace pair.
#   The time is the one 'qemu-img bench' reports (submission of the first
#   request to completion of the last), which excludes process start, open
#   and close.  Reported: the median IOPS (4 KiB) or MiB/s (1 MiB) per
#   stack; as ratio of a stack against another the median of the
#   per-repetition ratios (paired: drift between repetitions cancels),
#   with their min-max spread as a noise indication; bench/report.py says
#   for every figure what it is measured against.
#   By default nothing is pinned: qemu-img, nbdkit and the soft-device
#   processes run where the kernel puts them, as a user would run them.
#   BENCH_CPU=N pins qemu-img to CPU N and nbdkit and the soft-device
#   processes to the others: the cost of each stack on one CPU, with less
#   run-to-run variation on a small machine.  No guest and no TCG are
#   involved.
#
# Targets (bench/report.py): softdev-trace >= 0.97x bare on rand-read and
# rand-write, >= 0.98x bare on seq-read and seq-write; tap-c >= 0.90x
# softdev-trace on the 4 KiB workloads (IOPS) and >= 0.95x on the 1 MiB
# ones (throughput); tap-c >= min(1.15x nbdkit, 0.95x bare) on all (from
# the medians: nbdkit is not paired); tap-xor >= 0.80x softdev-xor on all.
# A missed target prints MISS but does not fail the script: benchmarks are
# not pass/fail tests.
#
# A full run takes about 15 minutes on 2 CPUs, over half of it in tap-xor
# while that runs softdev-xor's request count ten times slower.
#
# Environment (defaults in brackets):
#   BENCH_REPS [25]  BENCH_SECONDS [0.5]  BENCH_DIR [/dev/shm or /tmp]
#   BENCH_IMG_MIB [1024]  BENCH_SEQ_DEPTH [8]  BENCH_AIO [io_uring|threads]
#   BENCH_CACHE [writeback]  BENCH_CPU [none: no pinning; N: pin qemu-img
#   to CPU N]  BENCH_COUNT_RAND, BENCH_COUNT_SEQ (fixed counts, skip
#   calibration)  BENCH_RESULTS [build/bench/results.json]

set -u -o pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3

die() {
    echo "run-bench: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: $0 QEMU_BUILD"
QEMU_BUILD=$1
QEMU_IMG=$QEMU_BUILD/qemu-img

REPS=${BENCH_REPS:-25}
TARGET_SECONDS=${BENCH_SECONDS:-0.5}
BENCH_DIR=${BENCH_DIR:-}
IMG_MIB=${BENCH_IMG_MIB:-1024}
SEQ_DEPTH=${BENCH_SEQ_DEPTH:-8}
AIO=${BENCH_AIO:-}
CACHE=${BENCH_CACHE:-writeback}
CPU=${BENCH_CPU:-none}
RESULTS=${BENCH_RESULTS:-$SRC/build/bench/results.json}
RAND_DEPTH=32
PATTERN=165                 # 0xa5: writes carry non-zero data
XOR_KEY=90                  # 0x5a: softdev-xor and tap-xor

# --- checks -----------------------------------------------------------------
[ -x "$QEMU_IMG" ] ||
    die "$QEMU_IMG not found or not executable: run 'make' first"
"$QEMU_IMG" --version >/dev/null 2>&1 ||
    die "$QEMU_IMG --version failed: run 'make' first"
"$QEMU_IMG" --help 2>/dev/null | grep -qw 'softdev-trace' ||
    die "$QEMU_IMG has no softdev-trace driver: run 'make' first"
command -v nbdkit >/dev/null 2>&1 ||
    die "nbdkit not found: install Debian's nbdkit (./configure lists it)"
[ -x "$PY" ] || die "$PY not found"
for v in REPS IMG_MIB SEQ_DEPTH; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ $TARGET_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
    die "BENCH_SECONDS must be a number"
# The golden-ratio step must fit 'qemu-img bench -S' (INT_MAX).
if [ "$IMG_MIB" -lt 64 ] || [ "$IMG_MIB" -gt 3072 ]; then
    die "BENCH_IMG_MIB must be between 64 and 3072"
fi
for v in BENCH_COUNT_RAND BENCH_COUNT_SEQ; do
    [ -z "${!v:-}" ] || [[ ${!v} =~ ^[1-9][0-9]*$ ]] ||
        die "$v must be a positive integer"
done
# Default: tmpfs if it can hold the image with room to spare.
if [ -z "$BENCH_DIR" ]; then
    BENCH_DIR=${TMPDIR:-/tmp}
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] &&
       [ -w /dev/shm ]; then
        avail_mib=$(df -Pm /dev/shm | awk 'NR == 2 { print $4 }')
        if [ "${avail_mib:-0}" -ge $((IMG_MIB * 2 + 256)) ]; then
            BENCH_DIR=/dev/shm
        fi
    fi
fi
if ! [ -d "$BENCH_DIR" ] || ! [ -w "$BENCH_DIR" ]; then
    die "BENCH_DIR $BENCH_DIR is not a writable directory"
fi

# --- temporary directory, nbdkit, cleanup ----------------------------------
TMP=''
NBDKIT_PID=''
TAP_PIDS=()

# shellcheck disable=SC2317  # invoked by the traps
cleanup() {
    for p in "${TAP_PIDS[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    TAP_PIDS=()
    if [ -n "$NBDKIT_PID" ]; then
        kill "$NBDKIT_PID" 2>/dev/null
        wait "$NBDKIT_PID" 2>/dev/null
        NBDKIT_PID=''
    fi
    if [ -n "$TMP" ]; then
        rm -rf "$TMP"
        TMP=''
    fi
}
trap cleanup EXIT
trap 'echo "run-bench: interrupted" >&2; exit 130' INT
trap 'echo "run-bench: terminated" >&2; exit 143' TERM HUP

# A run killed with SIGKILL cannot clean up; on tmpfs its image would keep
# holding memory.  Remove directories of earlier runs whose owner is gone.
for d in "$BENCH_DIR"/softdev-bench.*; do
    [ -f "$d/owner" ] || continue
    owner=$(cat "$d/owner" 2>/dev/null)
    if [[ $owner =~ ^[0-9]+$ ]] && ! kill -0 "$owner" 2>/dev/null; then
        echo "run-bench: removing stale $d"
        rm -rf "$d"
    fi
done

TMP=$(mktemp -d "$BENCH_DIR/softdev-bench.XXXXXX") ||
    die "cannot create a temporary directory in $BENCH_DIR"
echo $$ >"$TMP/owner"
# The paths go into json: filenames unescaped.
[[ $TMP =~ ^[A-Za-z0-9_./+-]+$ ]] ||
    die "BENCH_DIR must not contain quotes, spaces or backslashes: $TMP"
IMG=$TMP/bench.img
SOCK=$TMP/nbdkit.sock
RUNS=$TMP/runs.tsv
CMDS=$TMP/commands.tsv
WLS=$TMP/workloads.tsv
STACKS_TSV=$TMP/stacks.tsv

T_START=$SECONDS

# --- image ------------------------------------------------------------------
echo "run-bench: creating ${IMG_MIB} MiB image with non-zero data in $TMP" \
    "($(stat -f -c %T "$TMP"))"
"$PY" - "$IMG" "$IMG_MIB" <<'EOF' || die "cannot create the image"
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
chunk = bytearray(os.urandom(1 << 20))
with open(path, 'wb') as f:
    for i in range(mib):
        chunk[0:8] = i.to_bytes(8, 'little')    # every MiB differs
        f.write(chunk)
    f.flush()
    os.fsync(f.fileno())
EOF
# Make sure all of it is in the page cache.
cat "$IMG" >/dev/null || die "cannot read back the image"

# --- CPU pinning (only if asked for) ---------------------------------------
# Unpinned is what users run, and the headline.  BENCH_CPU=N puts qemu-img
# (with its io_uring/thread-pool workers) on CPU N and nbdkit and the
# soft-device processes on the others: on a small machine this cuts the
# run-to-run variation (unpinned, the main loop and its workers bounce
# between CPUs and share them with whatever else runs), but it measures
# each stack on one CPU, which is not how it is used.
BENCH_PIN=()
SERVER_PIN=()
if [ "$CPU" != none ]; then
    [[ $CPU =~ ^[0-9]+$ ]] || die "BENCH_CPU must be a CPU number or 'none'"
    command -v taskset >/dev/null 2>&1 || die "BENCH_CPU needs taskset"
    mapfile -t CPUS < <("$PY" -c 'import os
print(*sorted(os.sched_getaffinity(0)), sep="\n")')
    others=()
    for c in "${CPUS[@]}"; do
        [ "$c" = "$CPU" ] || others+=("$c")
    done
    [ "${#others[@]}" -lt "${#CPUS[@]}" ] ||
        die "BENCH_CPU $CPU is not one of the CPUs this runs on: ${CPUS[*]}"
    [ "${#others[@]}" -ge 1 ] || die "BENCH_CPU needs at least two CPUs"
    BENCH_PIN=(taskset -c "$CPU")
    SERVER_PIN=(taskset -c "$(IFS=,; echo "${others[*]}")")
    echo "run-bench: qemu-img pinned to CPU $CPU, nbdkit and the" \
        "soft-device processes to ${SERVER_PIN[2]}"
else
    echo "run-bench: no CPU pinning (BENCH_CPU=N pins qemu-img to CPU N)"
fi

# --- nbdkit -----------------------------------------------------------------
# In a session of its own, so that a ^C does not kill it under a running
# benchmark before the trap can stop everything in order; it still exits
# with this script (--exit-with-parent) and is killed by the trap.
setsid "${SERVER_PIN[@]}" nbdkit --exit-with-parent -P "$TMP/nbdkit.pid" \
    -U "$SOCK" file "$IMG" 2>"$TMP/nbdkit.log" &
NBDKIT_PID=$!
for _ in $(seq 100); do
    [ -s "$TMP/nbdkit.pid" ] && break
    kill -0 "$NBDKIT_PID" 2>/dev/null || break
    sleep 0.1
done
if ! [ -s "$TMP/nbdkit.pid" ] || ! kill -0 "$NBDKIT_PID" 2>/dev/null; then
    cat "$TMP/nbdkit.log" >&2
    die "nbdkit did not start"
fi
[ "$(cat "$TMP/nbdkit.pid")" = "$NBDKIT_PID" ] ||
    die "nbdkit runs as PID $(cat "$TMP/nbdkit.pid"), expected $NBDKIT_PID"

# --- soft-device processes --------------------------------------------------
"$SRC/libsoftdev/build.sh" "$SRC" "$TMP/libsoftdev" >"$TMP/libsoftdev.log" 2>&1 ||
    { cat "$TMP/libsoftdev.log" >&2; die "cannot build libsoftdev"; }
# start_device NAME SOCKET ARGV...: in its own session, like nbdkit
start_device() {
    local name=$1 sock=$2
    shift 2
    setsid "${SERVER_PIN[@]}" "$@" 2>"$TMP/$name.log" &
    TAP_PIDS+=($!)
    for _ in $(seq 200); do
        [ -S "$sock" ] && return 0
        sleep 0.05
    done
    cat "$TMP/$name.log" >&2
    die "$name did not start"
}
# tap-c and tap-xor as their examples start by default (adaptive
# polling up to 100 us); tap-c-nopoll without polling.
start_device tap-c "$TMP/tap-c.sock" "$TMP/libsoftdev/passthrough" \
    --unix "$TMP/tap-c.sock"
start_device tap-c-nopoll "$TMP/tap-c-nopoll.sock" \
    "$TMP/libsoftdev/passthrough" --unix "$TMP/tap-c-nopoll.sock" --poll-us 0
start_device tap-xor "$TMP/tap-xor.sock" "$TMP/libsoftdev/xor" \
    --unix "$TMP/tap-xor.sock" "key=$XOR_KEY"
start_device tap-py "$TMP/tap-py.sock" env PYTHONPATH="$SRC/python" "$PY" \
    -m softdev run softdev.examples.passthrough:Passthrough \
    --unix "$TMP/tap-py.sock"

# --- AIO mode: io_uring if it works here, else threads --------------------
if [ -z "$AIO" ]; then
    AIO=threads
    if "${BENCH_PIN[@]}" "$QEMU_IMG" bench -t "$CACHE" -i io_uring \
        -c 64 -d 4 -s 4096 \
        "json:{\"driver\":\"file\",\"filename\":\"$IMG\"}" \
        >/dev/null 2>&1; then
        AIO=io_uring
    fi
fi
echo "run-bench: cache mode $CACHE, aio $AIO"

# --- stacks and workloads ---------------------------------------------------
STACKS=(bare softdev-trace tap-c tap-c-nopoll tap-py nbdkit softdev-xor
        tap-xor)
# Stacks that do exactly the same work as their base (same request count,
# calibrated on the base) and always run back to back with it.
declare -A PAIRED_WITH=([softdev-trace]=bare [tap-xor]=softdev-xor)
FILE="{\"driver\":\"file\",\"filename\":\"$IMG\"}"
declare -A SPEC SDESC
SPEC[bare]="json:$FILE"
SPEC[softdev-trace]="json:{\"driver\":\"softdev-trace\",\"file\":$FILE}"
SPEC[nbdkit]="json:{\"driver\":\"nbd\",\"server\":\
{\"type\":\"unix\",\"path\":\"$SOCK\"}}"
SPEC[softdev-xor]="json:{\"driver\":\"softdev-xor\",\"key\":$XOR_KEY,\
\"file\":$FILE}"
for t in tap-c tap-c-nopoll tap-py tap-xor; do
    SPEC[$t]="json:{\"driver\":\"softdev-tap\",\"server\":\
{\"type\":\"unix\",\"path\":\"$TMP/$t.sock\"},\"file\":$FILE}"
done
SDESC[bare]='file node, the base of the ratio column'
SDESC[softdev-trace]='softdev-trace (no trace file) above the file node'
SDESC[tap-c]='softdev-tap, C passthrough process, default options'
SDESC[tap-c-nopoll]='tap-c without polling (--poll-us 0)'
SDESC[tap-py]='softdev-tap, Python passthrough process'
SDESC[nbdkit]="nbd client, 'nbdkit -U SOCK file IMG' (its defaults)"
SDESC[softdev-xor]="softdev-xor (key $XOR_KEY) above the file node"
SDESC[tap-xor]="softdev-tap, C XOR process (key $XOR_KEY), default options"

BLOCKS=$((IMG_MIB * 256))
gcd() {
    local a=$1 b=$2 t
    while [ "$b" -ne 0 ]; do t=$((a % b)); a=$b; b=$t; done
    echo "$a"
}
step_blocks=$(( (BLOCKS * 618034 / 1000000) | 1 ))
while [ "$(gcd "$step_blocks" "$BLOCKS")" -ne 1 ]; do
    step_blocks=$((step_blocks + 2))
done
RAND_STEP=$((step_blocks * 4096))

WORKLOADS=(rand-read rand-write seq-read seq-write)
declare -A WARGS WUNIT WBYTES WDESC
WARGS[rand-read]="-d $RAND_DEPTH -s 4096 -S $RAND_STEP"
WARGS[rand-write]="-d $RAND_DEPTH -s 4096 -S $RAND_STEP -w --pattern $PATTERN"
WARGS[seq-read]="-d $SEQ_DEPTH -s 1048576 -S 1048576"
WARGS[seq-write]="-d $SEQ_DEPTH -s 1048576 -S 1048576 -w --pattern $PATTERN"
WUNIT[rand-read]=IOPS;  WUNIT[rand-write]=IOPS
WUNIT[seq-read]=MiB/s;  WUNIT[seq-write]=MiB/s
WBYTES[rand-read]=4096; WBYTES[rand-write]=4096
WBYTES[seq-read]=1048576; WBYTES[seq-write]=1048576
WDESC[rand-read]="4 KiB scattered read, QD$RAND_DEPTH"
WDESC[rand-write]="4 KiB scattered write, QD$RAND_DEPTH"
WDESC[seq-read]="1 MiB sequential read, QD$SEQ_DEPTH"
WDESC[seq-write]="1 MiB sequential write, QD$SEQ_DEPTH"

# bench WORKLOAD STACK COUNT: run once, print the seconds it reports.
bench() {
    local w=$1 s=$2 count=$3 out secs rc
    # shellcheck disable=SC2206
    local cmd=("${BENCH_PIN[@]}" "$QEMU_IMG" bench -t "$CACHE" -i "$AIO"
               -c "$count" ${WARGS[$w]} "${SPEC[$s]}")
    LAST_CMD="${cmd[*]}"
    out=$("${cmd[@]}" 2>&1)
    rc=$?
    if [ "$rc" -gt 128 ]; then
        # Killed by a signal, most likely ^C: no error report.
        echo "run-bench: qemu-img killed by signal $((rc - 128))" >&2
        return "$rc"
    fi
    if [ "$rc" -ne 0 ]; then
        {
            echo "run-bench: FAILED: $w on $s:"
            echo "  $LAST_CMD"
            sed 's/^/  | /' <<<"$out"
        } >&2
        return 1
    fi
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' <<<"$out")
    if ! [[ $secs =~ ^[0-9]+\.[0-9]+$ ]]; then
        {
            echo "run-bench: cannot parse the output of: $LAST_CMD"
            sed 's/^/  | /' <<<"$out"
        } >&2
        return 1
    fi
    echo "$secs"
}

# --- warm-up, smoke test and calibration ------------------------------------
printf 'workload\tunit\tbytes\tdescription\n' >"$WLS"
printf 'workload\tstack\tcount\tcommand\n' >"$CMDS"
printf 'rep\tworkload\tstack\tcount\tseconds\n' >"$RUNS"

# calibrate PROBE_COUNT SECONDS: the count that lasts about TARGET_SECONDS.
calibrate() {
    awk -v n="$1" -v t="$2" -v want="$TARGET_SECONDS" 'BEGIN {
        if (t < 0.001) t = 0.001
        c = int(n / t * want); if (c < n / 10) c = int(n / 10); print c }'
}

# COUNT[workload/stack].  A paired stack gets its base's count, so the
# two do exactly the same work; every other stack gets its own calibrated
# count, so that the slow ones (nbdkit, tap-py) do not dominate the
# runtime.
declare -A COUNT
printf 'stack\tpaired_with\tdescription\n' >"$STACKS_TSV"
for s in "${STACKS[@]}"; do
    printf '%s\t%s\t%s\n' "$s" "${PAIRED_WITH[$s]:-}" "${SDESC[$s]}" \
        >>"$STACKS_TSV"
done
echo "run-bench: warm-up and calibration (target ${TARGET_SECONDS} s per run)"
for w in "${WORKLOADS[@]}"; do
    case $w in
    rand-*) fixed=${BENCH_COUNT_RAND:-}; probe=50000 ;;
    seq-*)  fixed=${BENCH_COUNT_SEQ:-};  probe=2000 ;;
    esac
    [ -n "$fixed" ] && probe=$fixed
    declare -A probe_secs=()
    for s in "${STACKS[@]}"; do
        probe_secs[$s]=$(bench "$w" "$s" "$probe") || exit 1
    done
    # The very first runs are slow (cold caches): probe the base of each
    # pair once more and calibrate on the faster of the two.
    for base in $(printf '%s\n' "${PAIRED_WITH[@]}" | sort -u); do
        secs=$(bench "$w" "$base" "$probe") || exit 1
        probe_secs[$base]=$(awk -v a="${probe_secs[$base]}" -v b="$secs" \
                            'BEGIN { print (a < b ? a : b) }')
    done
    counts=''
    for s in "${STACKS[@]}"; do
        if [ -n "$fixed" ]; then
            COUNT[$w/$s]=$fixed
        else
            COUNT[$w/$s]=$(calibrate "$probe" \
                           "${probe_secs[${PAIRED_WITH[$s]:-$s}]}")
        fi
        counts="$counts $s=${COUNT[$w/$s]}"
        # shellcheck disable=SC2206
        cmd=("${BENCH_PIN[@]}" "$QEMU_IMG" bench -t "$CACHE" -i "$AIO"
             -c "${COUNT[$w/$s]}"
             ${WARGS[$w]} "${SPEC[$s]}")
        printf '%s\t%s\t%s\t%s\n' "$w" "$s" "${COUNT[$w/$s]}" "${cmd[*]}" \
            >>"$CMDS"
    done
    printf '%s\t%s\t%s\t%s\n' "$w" "${WUNIT[$w]}" "${WBYTES[$w]}" \
        "${WDESC[$w]}" >>"$WLS"
    printf '  %-10s %s: counts%s\n' "$w" "${WDESC[$w]}" "$counts"
done
echo "run-bench: command lines"
tail -n +2 "$CMDS" | while IFS=$'\t' read -r w s _ c; do
    printf '  %-10s %-13s %s\n' "$w" "$s" "$c"
done

# --- measurement ------------------------------------------------------------
# Order of the stacks in repetition R (from 0) of workload J: the stacks
# of each pair always back to back so that they see the same conditions,
# their order alternating from one repetition to the next; tap-c next to
# the bare/softdev-trace pair (its target is against softdev-trace); the
# whole sequence reversed every two repetitions.
stack_order() {
    local r=$1 j=$2 trace xor
    if [ $(((r + j) % 2)) -eq 0 ]; then
        trace='bare softdev-trace'
        xor='softdev-xor tap-xor'
    else
        trace='softdev-trace bare'
        xor='tap-xor softdev-xor'
    fi
    if [ $((((r / 2) + j) % 2)) -eq 0 ]; then
        echo "$trace tap-c tap-c-nopoll nbdkit tap-py $xor"
    else
        echo "$xor tap-py nbdkit tap-c-nopoll tap-c $trace"
    fi
}

for ((r = 1; r <= REPS; r++)); do
    printf 'run-bench: repetition %d/%d ' "$r" "$REPS"
    j=0
    for w in "${WORKLOADS[@]}"; do
        for s in $(stack_order $((r - 1)) "$j"); do
            secs=$(bench "$w" "$s" "${COUNT[$w/$s]}") || { echo; exit 1; }
            printf '%d\t%s\t%s\t%s\t%s\n' "$r" "$w" "$s" "${COUNT[$w/$s]}" \
                "$secs" >>"$RUNS"
            printf '.'
        done
        j=$((j + 1))
    done
    echo
done

# The soft-device processes and nbdkit must have survived every run.
for p in "${TAP_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null || die "a soft-device process died during the benchmark"
done
kill -0 "$NBDKIT_PID" 2>/dev/null || {
    cat "$TMP/nbdkit.log" >&2
    die "nbdkit died during the benchmark"
}

# --- report -----------------------------------------------------------------
mkdir -p "$(dirname "$RESULTS")" || die "cannot create $(dirname "$RESULTS")"
"$PY" "$SRC/bench/report.py" \
    --workloads "$WLS" --stacks "$STACKS_TSV" --commands "$CMDS" \
    --runs "$RUNS" --json "$RESULTS" \
    --meta "qemu_img=$QEMU_IMG" \
    --meta "qemu_version=$("$QEMU_IMG" --version | head -n1)" \
    --meta "nbdkit_version=$(nbdkit --version 2>/dev/null | head -n1)" \
    --meta "image_dir=$BENCH_DIR" \
    --meta "image_fs=$(stat -f -c %T "$TMP")" \
    --meta "image_mib=$IMG_MIB" \
    --meta "cache=$CACHE" --meta "aio=$AIO" --meta "qemu_img_cpu=$CPU" \
    --meta "server_cpus=${SERVER_PIN[2]:-any}" \
    --meta "repetitions=$REPS" --meta "target_seconds=$TARGET_SECONDS" \
    --meta "rand_step_bytes=$RAND_STEP" \
    --meta "elapsed_seconds=$((SECONDS - T_START))" ||
    die "report failed"
echo "run-bench: done in $((SECONDS - T_START)) s, results in $RESULTS"
exit 0
