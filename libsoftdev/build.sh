#!/bin/sh
# build.sh SRC OUTDIR: build libsoftdev.a, the example devices (passthrough,
# ramdisk, xor) and softdev.pc (PREFIX, default /usr/local) from the tree
# SRC into OUTDIR, without QEMU's build system.  SANITIZE=1 adds ASan/UBSan.
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 SRC OUTDIR" >&2
    exit 2
fi
src=$1
out=$2
mkdir -p "$out"
cc=${CC:-gcc}
ar=${AR:-ar}
cflags="-std=gnu11 -Wall -Wextra -Werror -O2 -pthread -I$src/include
-I$src/libsoftdev"
if [ "${SANITIZE:-0}" = 1 ]; then
    cflags="$cflags -g -fsanitize=address,undefined -fno-sanitize-recover=all"
fi

# shellcheck disable=SC2086
$cc $cflags -c "$src/libsoftdev/tap-protocol.c" -o "$out/tap-protocol.o"
# shellcheck disable=SC2086
$cc $cflags -c "$src/libsoftdev/server.c" -o "$out/server.o"
rm -f "$out/libsoftdev.a"
$ar rcs "$out/libsoftdev.a" "$out/tap-protocol.o" "$out/server.o"
for ex in passthrough ramdisk xor; do
    # shellcheck disable=SC2086
    $cc $cflags "$src/libsoftdev/examples/$ex.c" -L"$out" -lsoftdev \
        -o "$out/$ex"
done
sed "s|@PREFIX@|${PREFIX:-/usr/local}|" "$src/libsoftdev/softdev.pc.in" \
    > "$out/softdev.pc"
