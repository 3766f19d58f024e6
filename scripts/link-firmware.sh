#!/bin/sh
# link-firmware.sh DIR: link Debian's firmware (seabios, qemu-system-data,
# ipxe-qemu) into DIR, a QEMU data directory.  The Debian source package
# has no firmware blobs; a QEMU binary run from its build tree looks only
# in BUILD/qemu-bundle/usr/share/qemu, an installed one in PREFIX/share/qemu.
# Files the build made are left alone.
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
dest="$1"
mkdir -p "$dest"
for dir in /usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu; do
    [ -d "$dir" ] || continue
    for f in "$dir"/*; do
        name=${f##*/}
        if [ -e "$dest/$name" ] || [ -L "$dest/$name" ]; then
            case $(readlink "$dest/$name" || true) in
            /usr/*) ;;          # ours from an earlier run: refresh
            *) continue ;;      # made by the build: keep
            esac
        fi
        ln -sfn "$f" "$dest/$name"
    done
done
