#!/bin/sh
# Build the initramfs of the soft-device VM: an isolated TCG guest that
# runs a soft-device process (C or Python) for another guest's disk, the
# paper's model of soft devices in their own VM.  Busybox, the virtio
# network and block modules, and Python 3.11 with the C library, from
# Debian 12 (bookworm) packages.  The device itself comes at run time on
# a disk that holds a tar archive (/dev/vda): /init unpacks it into /opt
# and runs /opt/run.sh, with eth0 up as QEMU's user-mode network expects
# (10.0.2.15/24).  Usage: build-devvm.sh OUTDIR  (writes
# OUTDIR/devvm-initrd.img for build-guest.sh's OUTDIR/vmlinuz, the same
# kernel; no-op if the stamp is current).
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu

SELF=$(readlink -f "$0")
BED_TOOL=build-devvm
BED_LIB=$(dirname "$SELF")/debian-bed.sh
. "$BED_LIB"
bed_parse_args "$@"
STAMP_WANT=$(bed_stamp "$SELF")
STAMP="$OUT/.build-devvm.stamp"

bed_exit_if_current "$OUT/devvm-initrd.img"

MODULES="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
virtio_pci virtio_blk virtio_net"
# Python and what its binary and the modules softdev uses link with
PYPKGS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
libc6 zlib1g libexpat1"

bed_check_tools apt-get apt-cache dpkg-deb depmod modprobe cpio gzip sha256sum

TMP=$(mktemp -d "${TMPDIR:-/tmp}/softdev-devvm.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

bed_pick_kernel
# shellcheck disable=SC2086
bed_download "$KPKG" busybox-static $PYPKGS
bed_unpack_kernel_busybox
bed_resolve_modules "$MODULES" "$TMP/modlist"

R="$TMP/root"
bed_busybox_root "$R"
bed_install_modules "$R" "$TMP/modlist" softdev
bed_module_loader "$R" softdev

# ---- Python ------------------------------------------------------------------
for p in $PYPKGS; do
    dpkg-deb -x "$(bed_deb_of "$p")" "$TMP/py"
done
# What a soft device does not need: tests, GUIs, build files, locales
rm -rf "$TMP/py/usr/lib/python3.11/test" \
       "$TMP/py/usr/lib/python3.11/idlelib" \
       "$TMP/py/usr/lib/python3.11/tkinter" \
       "$TMP/py/usr/lib/python3.11/ensurepip" \
       "$TMP/py/usr/lib/python3.11/lib2to3" \
       "$TMP/py/usr/lib/python3.11/pydoc_data" \
       "$TMP/py/usr/lib/python3.11/config-3.11-x86_64-linux-gnu" \
       "$TMP/py/usr/lib/x86_64-linux-gnu/gconv" \
       "$TMP/py/usr/share" "$TMP/py/usr/bin/pydoc3.11"
# bookworm's libc6 has /lib*; the root has /lib/modules already
cp -a "$TMP/py/." "$R/"
ln -sf python3.11 "$R/usr/bin/python3"
[ -x "$R/usr/bin/python3.11" ] || bed_die "no python3.11 in $PYPKGS"

cat >"$R/init" <<'EOF_INIT'
#!/bin/sh
# softdev soft-device VM /init: virtio modules, eth0 for QEMU's user-mode
# network, the device from the tar archive on /dev/vda, then /opt/run.sh.
# Console lines: SOFTDEV-DEVVM READY (before run.sh), SOFTDEV-DEVVM
# EXIT <status> (after it).
# SPDX-License-Identifier: GPL-2.0-or-later

export PATH=/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root
umask 022
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs /tmp

load-modules

i=0
while { [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; } &&
      [ $i -lt 100 ]; do
    usleep 100000; i=$((i + 1))
done
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
mkdir -p /opt
if ! tar -xf /dev/vda -C /opt; then
    echo "SOFTDEV-DEVVM EXIT no payload on /dev/vda"
else
    echo "SOFTDEV-DEVVM READY uptime=$(cut -d' ' -f1 /proc/uptime)"
    cd /opt && sh /opt/run.sh
    echo "SOFTDEV-DEVVM EXIT $?"
fi
sync
poweroff -f
EOF_INIT
chmod 755 "$R/init"

bed_pack "$R" "$TMP/initrd.img"
mkdir -p "$OUT"
rm -f "$STAMP"
bed_install "$TMP/initrd.img" "$OUT/devvm-initrd.img"
echo "$STAMP_WANT" >"$STAMP"
echo "build-devvm: wrote $OUT/devvm-initrd.img ($KPKG," \
     "$(du -h "$OUT/devvm-initrd.img" | cut -f1))"
