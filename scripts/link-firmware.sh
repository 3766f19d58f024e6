#!/bin/sh
# link-firmware.sh QEMU_BUILD: a QEMU binary run from its build tree looks
# for firmware only in QEMU_BUILD/qemu-bundle/usr/share/qemu.  The Debian
# source package has no firmware blobs, so link Debian's seabios and
# qemu-system-data files there (files the build made are left alone).
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
dest="$1/qemu-bundle/usr/share/qemu"
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
