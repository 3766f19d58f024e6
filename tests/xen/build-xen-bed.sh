#!/bin/sh
# Build a cached Xen 4.17 test bed for softdev: the Xen hypervisor, a Linux
# kernel for dom0 and the PV domU, and busybox initramfs images for both,
# made only from Debian 12 (bookworm) packages (xen-hypervisor-4.17-amd64,
# xen-utils-4.17, xen-utils-common, xenstore-utils, the libxen* 4.17
# libraries and their bookworm dependencies, linux-image-6.1.0-*-amd64,
# busybox-static).  The QEMU device model is not part of the bed: xenbed.py
# packs it per run.
#
# Usage: build-xen-bed.sh OUTDIR   writes OUTDIR/xen, OUTDIR/vmlinuz,
# OUTDIR/dom0-base.cpio.gz, OUTDIR/domu-base.cpio.gz, OUTDIR/manifest.txt;
# a no-op if OUTDIR's stamp is current.
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu

SELF=$(readlink -f "$0")
BED_TOOL=build-xen-bed
BED_LIB=$(dirname "$SELF")/../guest/debian-bed.sh
. "$BED_LIB"
bed_parse_args "$@"
STAMP_WANT=$(bed_stamp "$SELF")
STAMP="$OUT/.build-xen-bed.stamp"

# ---- cache check ---------------------------------------------------------
if [ -f "$OUT/xen" ] && [ -f "$OUT/vmlinuz" ] &&
   [ -f "$OUT/dom0-base.cpio.gz" ] && [ -f "$OUT/domu-base.cpio.gz" ] &&
   [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ]; then
    echo "build-xen-bed: $OUT is up to date"
    exit 0
fi

XENVER=4.17
XENLIB=/usr/lib/xen-$XENVER

# Kernel modules (dependencies are added automatically), in load order.
# dom0: Xen device drivers for the toolstack and virtio for the outer
# QEMU's disk and NIC.  No xen-blkback/netback: QEMU is the backend.
DOM0_MODULES="xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs
virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
virtio_blk virtio_net"
# domU: loaded in parallel, so they must not need other modules.
DOMU_MODULES="xen-blkfront xen-netfront"

# Debian packages whose files make up dom0's toolstack.  The shared library
# closure of the binaries below must be found in these packages (the build
# fails and names the missing library otherwise).
XEN_PKGS="xen-hypervisor-$XENVER-amd64 xen-utils-$XENVER xen-utils-common
xenstore-utils libxenmisc$XENVER libxencall1 libxenevtchn1
libxenforeignmemory1 libxengnttab1 libxenstore4 libxentoollog1
libxendevicemodel1 libxenhypfs1 libxentoolcore1 libyajl2 libc6 libgcc-s1
libuuid1 liblzma5 libzstd1 zlib1g"

# Toolstack binaries (in $XENLIB/bin) for dom0.
XEN_BINS="xl xenstored xenconsoled xenconsole xen-init-dom0 libxl-save-helper"

bed_check_tools apt-get apt-cache dpkg-deb depmod modprobe cpio gzip \
    sha256sum objdump

TMP=$(mktemp -d "${TMPDIR:-/tmp}/softdev-xenbed.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

bed_pick_kernel
# shellcheck disable=SC2086
bed_download "$KPKG" busybox-static $XEN_PKGS
bed_unpack_kernel_busybox
X="$TMP/x"                      # all Xen toolstack packages, merged
for p in $XEN_PKGS; do
    dpkg-deb -x "$(bed_deb_of "$p")" "$X"
done

XENGZ="$X/boot/xen-$XENVER-amd64.gz"
[ -f "$XENGZ" ] || bed_die "no boot/xen-$XENVER-amd64.gz in xen-hypervisor-$XENVER-amd64"
gzip -dc "$XENGZ" >"$TMP/xen"
# QEMU's -kernel loads a multiboot ELF image (not a gzip file).
[ "$(head -c 4 "$TMP/xen" | od -An -c | tr -d ' ')" = '177ELF' ] ||
    bed_die "$XENGZ does not hold an ELF image"

# xenbed_root ROOT: a busybox root with what both /init scripts expect.
xenbed_root() {
    bed_busybox_root "$1"
    mkdir -p "$1/var/log" "$1/job"
    ln -s /run "$1/var/run"
    ln -s /run/lock "$1/var/lock"
    echo "root:x:0:0:root:/root:/bin/sh" >"$1/etc/passwd"
    echo "root:x:0:" >"$1/etc/group"
}

# Shell functions shared by both /init scripts.
write_init_common() {
    cat >"$1/etc/xenbed-common.sh" <<'EOF_COMMON'
# Sourced by /init (dom0 and domU).
# SPDX-License-Identifier: GPL-2.0-or-later
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

mount -t proc proc /proc
# Kernel messages (the clocksource watchdog's warnings under TCG, say)
# would land in the middle of the lines the host parses from the console:
# from here on only emergencies reach the console (dmesg keeps the rest).
echo 1 >/proc/sys/kernel/printk
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# load_modules [bg]: insmod the modules in /etc/xenbed-modules in order; with
# bg, each in the background (for modules without dependencies between
# them: a Xen frontend's insmod waits up to 300 s for its devices to
# connect to their backends).
load_modules() {
    KVER=$(cat /etc/xenbed-kver)
    while read -r m; do
        if [ "${1:-}" = bg ]; then
            insmod "/lib/modules/$KVER/$m" &
            continue
        fi
        insmod "/lib/modules/$KVER/$m" 2>/tmp/insmod.err ||
            grep -q 'File exists' /tmp/insmod.err ||
            echo "XENBED-WARN insmod $m: $(head -n 1 /tmp/insmod.err)"
    done </etc/xenbed-modules
}

# Kernel command line word xenbed.NAME=VALUE -> VALUE (or $2).
cmdline_opt() {
    v=$2
    for w in $(cat /proc/cmdline); do
        case "$w" in "xenbed.$1="*) v=${w#*=} ;; esac
    done
    echo "$v"
}

finish() {
    sync
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}
EOF_COMMON
}

# ---- domU initramfs --------------------------------------------------------
bed_resolve_modules "$DOMU_MODULES" "$TMP/domu-mods"
[ "$(wc -l <"$TMP/domu-mods")" -eq "$(echo "$DOMU_MODULES" | wc -w)" ] ||
    bed_die "domU modules $DOMU_MODULES need others: $(tr '\n' ' ' <"$TMP/domu-mods")"
RU="$TMP/domu"
xenbed_root "$RU"
bed_install_modules "$RU" "$TMP/domu-mods" xenbed
write_init_common "$RU"
cat >"$RU/init" <<'EOF_INIT'
#!/bin/sh
# xenbed PV domU /init: load xen-blkfront/xen-netfront, wait for the disk
# named by xenbed.dev= (if any), run /job/domu.sh and report its exit status
# as "XENBED-DOMU-EXIT <rc>" on the console (hvc0), then power off.
# SPDX-License-Identifier: GPL-2.0-or-later
. /etc/xenbed-common.sh
echo "XENBED-DOMU-INIT uptime=$(uptime_s)"
# xen-blkfront and xen-netfront do not depend on each other; loaded in the
# background, a device whose backend never connects does not hold up the
# others (and the job can report it).
load_modules bg
ip link set lo up 2>/dev/null || true

DEV=$(cmdline_opt dev "")
if [ -n "$DEV" ]; then
    i=0
    while [ ! -b "$DEV" ] && [ $i -lt 300 ]; do
        usleep 100000; i=$((i + 1))
    done
    [ -b "$DEV" ] || echo "XENBED-WARN no block device $DEV after 30 s" \
        "(is its backend in the device model up?)"
fi

echo "XENBED-DOMU-READY uptime=$(uptime_s)"
if [ -f /job/domu.sh ]; then
    /bin/sh /job/domu.sh
    rc=$?
elif [ "$(cmdline_opt shell 0)" = 1 ]; then
    setsid cttyhack sh -l || sh
    rc=0
else
    echo "XENBED-WARN no /job/domu.sh"
    rc=127
fi
echo "XENBED-DOMU-EXIT $rc"
finish
EOF_INIT
chmod 755 "$RU/init"
bed_pack "$RU" "$TMP/domu-base.cpio.gz"

# ---- dom0 initramfs --------------------------------------------------------
bed_resolve_modules "$DOM0_MODULES" "$TMP/dom0-mods"
R0="$TMP/dom0"
xenbed_root "$R0"
bed_install_modules "$R0" "$TMP/dom0-mods" xenbed
write_init_common "$R0"

LIBDIR=usr/lib/x86_64-linux-gnu
mkdir -p "$R0/$XENLIB/bin" "$R0/$LIBDIR" "$R0/lib64"
# Merged /usr: /lib/x86_64-linux-gnu is /usr/lib/x86_64-linux-gnu.
mkdir -p "$R0/lib"
ln -s "/$LIBDIR" "$R0/lib/x86_64-linux-gnu"
ln -s "/$LIBDIR/ld-linux-x86-64.so.2" "$R0/lib64/ld-linux-x86-64.so.2"

# find_lib SONAME: its file in the extracted packages.
find_lib() {
    for d in "$X/usr/lib/x86_64-linux-gnu" "$X/lib/x86_64-linux-gnu" \
             "$X$XENLIB/lib/x86_64-linux-gnu"; do
        if [ -e "$d/$1" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}

: >"$TMP/libs.todo"
for b in $XEN_BINS; do
    [ -f "$X$XENLIB/bin/$b" ] || bed_die "no $XENLIB/bin/$b in xen-utils-$XENVER"
    cp "$X$XENLIB/bin/$b" "$R0$XENLIB/bin/$b"
    echo "$X$XENLIB/bin/$b" >>"$TMP/libs.todo"
done
cp "$X/usr/bin/xenstore" "$R0/usr/bin/xenstore"
echo "$X/usr/bin/xenstore" >>"$TMP/libs.todo"
for c in read write ls list rm exists chmod watch; do
    ln -s xenstore "$R0/usr/bin/xenstore-$c"
done
for b in xl xenstored xenconsoled xen-init-dom0; do
    ln -s "$XENLIB/bin/$b" "$R0/usr/sbin/$b"
done
# glibc dlopen()s libgcc_s for pthread_cancel/unwinding: xl aborts without.
echo "libgcc_s.so.1" >"$TMP/libs.want"
echo "ld-linux-x86-64.so.2" >>"$TMP/libs.want"
# Worklist: ELF files whose NEEDED entries are still to be resolved.
: >"$TMP/libs.done"
while [ -s "$TMP/libs.todo" ]; do
    f=$(head -n 1 "$TMP/libs.todo")
    sed -i 1d "$TMP/libs.todo"
    objdump -p "$f" | sed -n 's/^ *NEEDED *//p' >>"$TMP/libs.want"
    while read -r so; do
        grep -qxF "$so" "$TMP/libs.done" && continue
        echo "$so" >>"$TMP/libs.done"
        src=$(find_lib "$so") ||
            bed_die "library $so (needed by $(basename "$f")) is in none of the packages: add its package to XEN_PKGS"
        cp -L "$src" "$R0/$LIBDIR/$so"
        echo "$src" >>"$TMP/libs.todo"
    done <"$TMP/libs.want"
    : >"$TMP/libs.want"
done

# Directories and configuration libxl, xenstored and xenconsoled expect.
mkdir -p "$R0/etc/xen/scripts" "$R0/var/lib/xen" "$R0/var/lib/xenstored" \
         "$R0/var/log/xen/console" "$R0/opt/softdev"
cat >"$R0/etc/xen/xl.conf" <<'EOF_XLCONF'
# xenbed: dom0 has a fixed dom0_mem; do not balloon it.
autoballoon="off"
EOF_XLCONF

cat >"$R0/init" <<'EOF_INIT'
#!/bin/sh
# xenbed dom0 /init: mount xenfs, load the Xen and virtio modules, start
# xenstored, xen-init-dom0 and xenconsoled, configure eth0 for the outer
# QEMU's user networking (if present), run /job/run.sh and report its exit
# status as "XENBED-DOM0-EXIT <rc>" on the console, then power off.
# SPDX-License-Identifier: GPL-2.0-or-later
. /etc/xenbed-common.sh
export PATH=/usr/lib/xen-4.17/bin:$PATH
echo "XENBED-DOM0-INIT uptime=$(uptime_s)"
load_modules
mkdir -p /proc/xen /run/xen /var/log/xen/console /var/lib/xen
mount -t xenfs xenfs /proc/xen || echo "XENBED-WARN cannot mount xenfs"

fail_boot() {
    echo "XENBED-DOM0-ERROR $*"
    echo "XENBED-DOM0-EXIT 125"
    finish
}

/usr/lib/xen-4.17/bin/xenstored --pid-file=/run/xen/xenstored.pid \
    >/var/log/xen/xenstored.out 2>&1 || fail_boot "xenstored failed to start"
i=0
until /usr/bin/xenstore-read / >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail_boot "xenstored does not answer"
    usleep 100000
done
/usr/lib/xen-4.17/bin/xen-init-dom0 >/var/log/xen/xen-init-dom0.log 2>&1 ||
    fail_boot "xen-init-dom0: $(tail -n 1 /var/log/xen/xen-init-dom0.log)"
/usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xen/xenconsoled.pid \
    --log=guest --log-dir=/var/log/xen/console ||
    fail_boot "xenconsoled failed to start"

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
echo "XENBED-DOM0-READY uptime=$(uptime_s)"

if [ -f /job/run.sh ]; then
    (cd /job && /bin/sh /job/run.sh)
    rc=$?
    echo "XENBED-DOM0-EXIT $rc"
else
    echo "XENBED-DOM0-SHELL (no /job/run.sh; exit the shell to power off)"
    setsid cttyhack sh -l || sh
fi
finish
EOF_INIT
chmod 755 "$R0/init"
bed_pack "$R0" "$TMP/dom0-base.cpio.gz"

# ---- install ---------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$STAMP"
for f in xen dom0-base.cpio.gz domu-base.cpio.gz; do
    bed_install "$TMP/$f" "$OUT/$f"
done
bed_install "$VMLINUZ" "$OUT/vmlinuz"
{
    for d in "$TMP"/debs/*.deb; do
        echo "package $(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version)"
    done
    echo "kernel-version $KVER"
    echo "dom0-modules $(tr '\n' ' ' <"$R0/etc/xenbed-modules")"
    echo "domu-modules $(tr '\n' ' ' <"$RU/etc/xenbed-modules")"
    echo "dom0-libs $(LC_ALL=C sort "$TMP/libs.done" | tr '\n' ' ')"
    (cd "$OUT" && sha256sum xen vmlinuz dom0-base.cpio.gz domu-base.cpio.gz)
} >"$OUT/manifest.txt"
echo "$STAMP_WANT" >"$STAMP"
echo "build-xen-bed: wrote $OUT/{xen,vmlinuz,dom0-base.cpio.gz,domu-base.cpio.gz} ($KPKG, xen $XENVER)"
