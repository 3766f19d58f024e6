#!/bin/sh
# run-fuzz.sh SRC [SECONDS]: build the libFuzzer targets of SRC/tests/fuzz
# with clang (-fsanitize=fuzzer,address,undefined) into SRC/build/fuzz and
# run each for SECONDS (default 20; or per target, e.g.
# conn=1200,device=600,client=300,slog=600; SECONDS/RUNS stops a target
# after RUNS executions or SECONDS, whichever comes first:
# conn=3000/10000000), starting from a seed corpus made from the canonical
# messages of tests/unit/tap-vectors.c (fuzz-slog: from the small images
# of tests/fuzz/make-slog-seeds.c; fuzz-tt: make-tt-seeds.c's journals).  The corpus grows in
# build/fuzz/corpus-NAME across runs.  Exits non-zero if a target crashed
# (the input is left as build/fuzz/NAME-crash-*).
#
#   fuzz-conn    the client's byte stream into a libsoftdev connection,
#                per input in one thread without sockets (fast)
#   fuzz-device  the same through the whole threaded server over a
#                socketpair (slow; the parallel model, SCM_RIGHTS)
#   fuzz-client  a device's byte stream into the decoders, as QEMU uses them
#   fuzz-slog    the start of a softdev-compress or softdev-cas image into
#                slog-format.c, opened as block/softdev/slog.c does (header,
#                slots, map with its hashes,
#                log replay), with encode/decode round trips
#   fuzz-tt      the start of a softdev-timetravel journal into
#                tt-format.c, opened as block/softdev/tt-replay.c does
#                (header copies, log replay into the history), with
#                round trips and the extent map of every mark
#
# Needs clang and libclang-rt-14-dev (Debian 12).
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
src=$(cd "${1:?usage: run-fuzz.sh SRC [SECONDS|NAME=SECONDS,...]}" && pwd)
times=${2:-20}
out=$src/build/fuzz
cc=${CLANG:-clang}
mkdir -p "$out"

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run-fuzz.sh: $cc not found" \
        "(apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi
cflags="-std=gnu11 -g -O1 -Wall -Wextra -Werror -pthread -I$src -I$src/include
-I$src/libsoftdev -fsanitize=fuzzer,address,undefined
-fno-sanitize-recover=undefined"
# libsoftdev without its command line (main.c)
lib=
for f in error conn stream ring requests lower protocol/tap-protocol; do
    lib="$lib $src/libsoftdev/$f.c"
done

# Seeds
# shellcheck disable=SC2086
$cc -std=gnu11 -I"$src" -I"$src/include" "$src/tests/unit/tap-vectors.c" \
    "$src/libsoftdev/protocol/tap-protocol.c" -o "$out/tap-vectors"
rm -rf "$out/seeds"
"$out/tap-vectors" emit | /usr/bin/python3 "$src/tests/fuzz/make-seeds.py" \
    "$out/seeds"
$cc -std=gnu11 -I"$src" "$src/tests/fuzz/make-slog-seeds.c" \
    "$src/block/softdev/slog-format.c" -o "$out/make-slog-seeds"
"$out/make-slog-seeds" "$out/seeds/slog"
glib=$(pkg-config --cflags --libs glib-2.0)
# shellcheck disable=SC2086
$cc -std=gnu11 -I"$src" "$src/tests/fuzz/make-tt-seeds.c" \
    "$src/block/softdev/tt-format.c" "$src/block/softdev/slog-format.c" \
    $glib -o "$out/make-tt-seeds"
"$out/make-tt-seeds" "$out/seeds/tt"

# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-device.c" "$src/tests/fuzz/fuzz-devices.c" \
    $lib -o "$out/fuzz-device"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-conn.c" "$src/tests/fuzz/fuzz-devices.c" \
    $lib -o "$out/fuzz-conn"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-client.c" "$src/libsoftdev/protocol/tap-protocol.c" \
    -o "$out/fuzz-client"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-slog.c" "$src/block/softdev/slog-format.c" \
    -o "$out/fuzz-slog"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-tt.c" "$src/block/softdev/tt-format.c" \
    "$src/block/softdev/tt-extents.c" "$src/block/softdev/slog-format.c" \
    $glib -o "$out/fuzz-tt"

status=0
for name in conn device client slog tt; do
    case $times in
    *=*)
        seconds=$(echo "$times" | tr ',' '\n' | sed -n "s/^$name=//p")
        [ -n "$seconds" ] || continue ;;
    *)
        seconds=$times ;;
    esac
    runs=-1
    case $seconds in
    */*)
        runs=${seconds#*/}
        seconds=${seconds%/*} ;;
    esac
    corpus=$out/corpus-$name
    seeds=$name
    [ "$name" = conn ] && seeds=device     # the same inputs
    mkdir -p "$corpus"
    if [ "$runs" = -1 ]; then
        echo "=== fuzz-$name: $seconds s ==="
    else
        echo "=== fuzz-$name: $runs executions, at most $seconds s ==="
    fi
    # -close_fd_mask=2: the device's messages about bad input are noise
    if "$out/fuzz-$name" -max_total_time="$seconds" -runs="$runs" \
        -timeout=20 -rss_limit_mb=4096 -max_len=300000 -close_fd_mask=2 \
        -print_final_stats=1 -artifact_prefix="$out/$name-" \
        "$corpus" "$out/seeds/$seeds" >"$out/fuzz-$name.log" 2>&1; then
        tail -n 12 "$out/fuzz-$name.log" | grep -E '^(stat::|Done|#)' || true
        echo "=== fuzz-$name: no crash ==="
    else
        tail -n 60 "$out/fuzz-$name.log"
        echo "=== fuzz-$name: CRASH (see $out/fuzz-$name.log) ==="
        status=1
    fi
done
exit $status
