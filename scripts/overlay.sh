#!/bin/sh
# overlay.sh SRCDIR QEMUDIR: link softdev's folders into a QEMU tree and
# bring the hook patches of SRCDIR/patches/qemu/series up to date (the
# previously applied series is reverted first).  Cheap; run by configure
# and by every 'make'.
#
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu
src=$1
qemu=$2

link() {
    # link TARGET-IN-SRC PATH-IN-QEMU
    [ -e "$src/$1" ] || return 0
    if [ "$(readlink "$qemu/$2" 2>/dev/null)" != "$src/$1" ]; then
        rm -rf "${qemu:?}/$2"
        mkdir -p "$(dirname "$qemu/$2")"
        ln -s "$src/$1" "$qemu/$2"
    fi
}

link block/softdev block/softdev
link include/softdev include/softdev
link libsoftdev libsoftdev
link net/softdev net/softdev
link usb/softdev hw/usb/softdev
link hw/xen/softdev hw/xen/softdev
for f in "$src"/qapi/*.json; do
    link "qapi/${f##*/}" "qapi/${f##*/}"
done
for f in "$src"/tests/qtest/*.c; do
    [ -e "$f" ] && link "tests/qtest/${f##*/}" "tests/qtest/${f##*/}"
done
for f in "$src"/tests/qemu-iotests/tests/*; do
    [ -e "$f" ] && link "tests/qemu-iotests/tests/${f##*/}" \
        "tests/qemu-iotests/tests/${f##*/}"
done

# Hook patches: revert what was applied before if the series changed.
# block-core.json also gets the soft devices of block/softdev/devices
# (scripts/softdev-drivers.py), made from the copy saved after patching.
applied="$qemu/.softdev-patches"
want=$(cd "$src/patches/qemu" && cat series $(cat series) | sha256sum | cut -c1-16)
if ! [ -f "$applied/stamp" ] || [ "$(cat "$applied/stamp")" != "$want" ]; then
    if [ -f "$applied/block-core.json" ]; then
        cp "$applied/block-core.json" "$qemu/qapi/block-core.json"
    fi
    if [ -f "$applied/series" ]; then
        for p in $(sed -n '1!G;h;$p' "$applied/series"); do
            patch -s -R -p1 -d "$qemu" < "$applied/$p" ||
                { echo "overlay.sh: cannot revert $p" >&2; exit 1; }
        done
    fi
    rm -rf "$applied"
    mkdir -p "$applied"
    for p in $(cat "$src/patches/qemu/series"); do
        patch -s -p1 -N -d "$qemu" < "$src/patches/qemu/$p" ||
            { echo "overlay.sh: hook patch $p does not apply" >&2; exit 1; }
        cp "$src/patches/qemu/$p" "$applied/$p"
        echo "$p" >> "$applied/series"
    done
    cp "$qemu/qapi/block-core.json" "$applied/block-core.json"
    echo "$want" > "$applied/stamp"
    echo "overlay.sh: applied $(wc -l < "$applied/series") hook patch(es)"
fi
/usr/bin/python3 "$src/scripts/softdev-drivers.py" "$src" "$qemu" \
    "$applied/block-core.json"
