#!/bin/sh
# build.sh [SRC [OUTDIR]]: build libsoftdev from the tree SRC (default: the
# checkout holding this script) into OUTDIR (default: SRC/build/libsoftdev),
# without QEMU's build system:
#   libsoftdev.a, libsoftdev.so.1 (+ libsoftdev.so), softdev-run,
#   the examples (passthrough, ramdisk, xor, logger) as programs and as objects
#   for softdev-run (passthrough.so, ...),
#   softdev.pc for an install under PREFIX (default /usr/local), and
#   softdev-uninstalled.pc for devices built against OUTDIR and SRC:
#     PKG_CONFIG_PATH=OUTDIR cc dev.c $(pkg-config --cflags --libs softdev)
# SANITIZE=1 adds ASan/UBSan; CC, AR and CFLAGS are honoured.
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
if [ $# -gt 2 ]; then
    echo "usage: $0 [SRC [OUTDIR]]" >&2
    exit 2
fi
src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
out=${2:-$src/build/libsoftdev}
mkdir -p "$out"
cc=${CC:-gcc}
ar=${AR:-ar}
cflags="-std=gnu11 -Wall -Wextra -Werror -O2 -g -pthread -fPIC
-I$src -I$src/include -I$src/libsoftdev ${CFLAGS:-}"
if [ "${SANITIZE:-0}" = 1 ]; then
    cflags="$cflags -fsanitize=address,undefined -fno-sanitize-recover=all"
fi
lib=$src/libsoftdev

# The codec is all API; the server exports what softdev.h marks SOFTDEV_API
# shellcheck disable=SC2086
$cc $cflags -c "$lib/protocol/tap-protocol.c" -o "$out/tap-protocol.o"
# (the files of server-internal.h; main.c is the command line)
objs="$out/tap-protocol.o"
for f in error conn stream ring requests lower main; do
    # shellcheck disable=SC2086
    $cc $cflags -fvisibility=hidden -c "$lib/$f.c" -o "$out/$f.o"
    objs="$objs $out/$f.o"
done
rm -f "$out/libsoftdev.a"
# shellcheck disable=SC2086
$ar rcs "$out/libsoftdev.a" $objs
# shellcheck disable=SC2086
$cc $cflags -shared -Wl,-soname,libsoftdev.so.1 \
    -Wl,--version-script="$lib/libsoftdev.map" -Wl,-z,defs \
    $objs -o "$out/libsoftdev.so.1"
ln -sf libsoftdev.so.1 "$out/libsoftdev.so"

# softdev-run has the library built in and exports it to the device objects
# shellcheck disable=SC2086
$cc $cflags -rdynamic "$lib/runner.c" \
    -Wl,--whole-archive "$out/libsoftdev.a" -Wl,--no-whole-archive -ldl \
    -o "$out/softdev-run"

for ex in passthrough ramdisk xor logger; do
    # shellcheck disable=SC2086
    $cc $cflags "$lib/examples/$ex.c" "$out/libsoftdev.a" -o "$out/$ex"
    # shellcheck disable=SC2086
    $cc $cflags -shared "$lib/examples/$ex.c" -o "$out/$ex.so"
done

sed "s|@PREFIX@|${PREFIX:-/usr/local}|" "$lib/softdev.pc.in" \
    > "$out/softdev.pc"
# pkg-config prefers NAME-uninstalled.pc: this tree's header, OUTDIR's library
out_abs=$(cd "$out" && pwd)
sed -e "s|^libdir=.*|libdir=$out_abs|" \
    -e "s|^includedir=.*|includedir=$src/libsoftdev|" \
    -e "s|^bindir=.*|bindir=$out_abs|" \
    "$out/softdev.pc" > "$out/softdev-uninstalled.pc"
