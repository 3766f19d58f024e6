#!/bin/sh
# run-c-tests.sh SRC: build the C unit tests of SRC/tests/unit (those that
# need no QEMU) with AddressSanitizer and UBSan into SRC/build/unit and run
# them.
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
src=$1
out="$src/build/unit"
mkdir -p "$out"
cc=${CC:-gcc}
cflags="-std=gnu11 -Wall -Wextra -Werror -Wno-missing-field-initializers -g
-O1 -fsanitize=address,undefined -fno-sanitize-recover=all -I$src/include"

# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/tap-protocol-test.c" \
    "$src/libsoftdev/tap-protocol.c" -o "$out/tap-protocol-test"
"$out/tap-protocol-test"
# shellcheck disable=SC2086
$cc $cflags "$src/tests/unit/tap-vectors.c" "$src/libsoftdev/tap-protocol.c" \
    -o "$out/tap-vectors"
"$out/tap-vectors" emit | "$out/tap-vectors" check | grep -v ' OK$' && exit 1
echo "tap-vectors: libsoftdev decodes what it encodes"
