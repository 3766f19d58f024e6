#!/bin/sh
# install.sh PREFIX [DESTDIR]: build libsoftdev (build.sh, into
# build/libsoftdev of this tree, or into the directory $BUILD names,
# e.g. for a read-only checkout) and install it under DESTDIR/PREFIX:
#   lib/libsoftdev.a, lib/libsoftdev.so.1, lib/libsoftdev.so (symlink)
#   lib/pkgconfig/softdev.pc
#   include/softdev.h, include/softdev/tap-protocol.h
#   bin/softdev-run
# Then: cc dev.c $(pkg-config --cflags --libs softdev)
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: [BUILD=DIR] $0 PREFIX [DESTDIR]" >&2
    exit 2
fi
prefix=$1
dest=${2:-}
case $prefix in
/*) ;;
*) echo "$0: PREFIX must be an absolute path" >&2; exit 2 ;;
esac
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$src/build/libsoftdev}

PREFIX=$prefix sh "$src/libsoftdev/build.sh" "$src" "$build"

root=$dest$prefix
install -d "$root/lib/pkgconfig" "$root/include/softdev" "$root/bin"
install -m 0644 "$build/libsoftdev.a" "$root/lib/libsoftdev.a"
install -m 0755 "$build/libsoftdev.so.1" "$root/lib/libsoftdev.so.1"
ln -sf libsoftdev.so.1 "$root/lib/libsoftdev.so"
install -m 0644 "$build/softdev.pc" "$root/lib/pkgconfig/softdev.pc"
install -m 0644 "$src/libsoftdev/softdev.h" "$root/include/softdev.h"
install -m 0644 "$src/libsoftdev/protocol/tap-protocol.h" \
    "$root/include/softdev/tap-protocol.h"
install -m 0755 "$build/softdev-run" "$root/bin/softdev-run"
echo "libsoftdev installed in $root"
