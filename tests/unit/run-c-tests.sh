#!/bin/sh
# run-c-tests.sh SRC: build the C unit tests of SRC/tests/unit (those that
# need no QEMU) with AddressSanitizer and UBSan into SRC/build/unit and run
# them: the codec's tests, the cross-check of its vectors, softdev-crypt's
# cipher, libsoftdev's adaptive polling, the on-disk format of
# softdev-compress and softdev-cas (slog-format-test), softdev-cas's index
# (cas-index-test), softdev-timetravel's journal (tt-format-test), and the
# fuzz targets of tests/fuzz (conn, device, client, slog, tt) replayed on their seed corpus (without libFuzzer;
# tests/fuzz/run-fuzz.sh does the fuzzing).
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
src=$1
out="$src/build/unit"
mkdir -p "$out"
cc=${CC:-gcc}
cflags="-std=gnu11 -Wall -Wextra -Werror -Wno-missing-field-initializers -g
-O1 -fsanitize=address,undefined -fno-sanitize-recover=all -I$src -I$src/include"

# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/tap-protocol-test.c" \
    "$src/libsoftdev/protocol/tap-protocol.c" -o "$out/tap-protocol-test"
"$out/tap-protocol-test"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/tap-states-test.c" \
    "$src/block/softdev/tap-states.c" -o "$out/tap-states-test"
"$out/tap-states-test"
# ...and as a debug build, where an illegal transition aborts
# shellcheck disable=SC2086
$cc $cflags -DSOFTDEV_TAP_ASSERT_TRANSITIONS=1 \
    "$src/tests/unit/tap-states-test.c" "$src/block/softdev/tap-states.c" \
    -o "$out/tap-states-test-debug"
"$out/tap-states-test-debug"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/tap-vectors.c" "$src/libsoftdev/protocol/tap-protocol.c" \
    -o "$out/tap-vectors"
"$out/tap-vectors" emit | "$out/tap-vectors" check | grep -v ' OK$' && exit 1
echo "tap-vectors: libsoftdev decodes what it encodes"

# softdev-crypt's AES-256-XTS: IEEE 1619, OpenSSL and the kernel agree
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/crypt-xts-test.c" \
    "$src/block/softdev/crypt-xts.c" -lcrypto -o "$out/crypt-xts-test"
"$out/crypt-xts-test"

# softdev-compress's and softdev-cas's on-disk format (the test includes
# slog-format.c)
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/slog-format-test.c" -o "$out/slog-format-test"
"$out/slog-format-test"

# softdev-timetravel's journal format, history and extent maps (the test
# includes tt-format.c and tt-extents.c)
glib=$(pkg-config --cflags --libs glib-2.0)
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/tt-format-test.c" \
    "$src/block/softdev/slog-format.c" $glib -o "$out/tt-format-test"
"$out/tt-format-test"

# softdev-cas's index against a model (the test includes cas-index.c)
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/cas-index-test.c" -o "$out/cas-index-test"
"$out/cas-index-test"

# libsoftdev without its command line (main.c)
lib=
for f in error conn stream ring requests lower protocol/tap-protocol; do
    lib="$lib $src/libsoftdev/$f.c"
done

# shellcheck disable=SC2086
$cc $cflags -pthread -I"$src/libsoftdev" \
    "$src/tests/unit/libsoftdev-poll-test.c" $lib -o "$out/libsoftdev-poll-test"
"$out/libsoftdev-poll-test"

rm -rf "$out/fuzz-seeds"
"$out/tap-vectors" emit | /usr/bin/python3 "$src/tests/fuzz/make-seeds.py" \
    "$out/fuzz-seeds"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/make-slog-seeds.c" \
    "$src/block/softdev/slog-format.c" -o "$out/make-slog-seeds"
"$out/make-slog-seeds" "$out/fuzz-seeds/slog"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/make-tt-seeds.c" "$src/block/softdev/tt-format.c" \
    "$src/block/softdev/slog-format.c" $glib -o "$out/make-tt-seeds"
"$out/make-tt-seeds" "$out/fuzz-seeds/tt"
# shellcheck disable=SC2086
$cc $cflags -pthread -I"$src/libsoftdev" "$src/tests/fuzz/fuzz-device.c" \
    "$src/tests/fuzz/fuzz-devices.c" "$src/tests/fuzz/standalone.c" $lib \
    -o "$out/fuzz-device"
# shellcheck disable=SC2086
$cc $cflags -pthread -I"$src/libsoftdev" "$src/tests/fuzz/fuzz-conn.c" \
    "$src/tests/fuzz/fuzz-devices.c" "$src/tests/fuzz/standalone.c" $lib \
    -o "$out/fuzz-conn"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-client.c" "$src/tests/fuzz/standalone.c" \
    "$src/libsoftdev/protocol/tap-protocol.c" -o "$out/fuzz-client"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-slog.c" "$src/tests/fuzz/standalone.c" \
    "$src/block/softdev/slog-format.c" -o "$out/fuzz-slog"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/fuzz/fuzz-tt.c" "$src/tests/fuzz/standalone.c" \
    "$src/block/softdev/tt-format.c" "$src/block/softdev/tt-extents.c" \
    "$src/block/softdev/slog-format.c" $glib -o "$out/fuzz-tt"
# ...and on what run-fuzz.sh found, if it ran here.  The device's
# messages about bad input go to a log.
# (fuzz-conn takes fuzz-device's inputs)
for t in device conn client slog tt; do
    seeds=$t
    [ "$t" = conn ] && seeds=device
    set -- "$out/fuzz-seeds/$seeds/"*
    if [ -d "$src/build/fuzz/corpus-$t" ]; then
        # shellcheck disable=SC2046
        set -- "$@" $(find "$src/build/fuzz/corpus-$t" -type f)
    fi
    if ! "$out/fuzz-$t" "$@" 2>"$out/fuzz-$t.log"; then
        tail -n 40 "$out/fuzz-$t.log"
        exit 1
    fi
done
