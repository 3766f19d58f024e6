#!/bin/sh
# Build a cached Linux guest (kernel + busybox initramfs) for softdev TCG tests,
# made only from Debian 12 (bookworm) packages: linux-image-6.1.0-*-amd64 and
# busybox-static.  Usage: build-guest.sh OUTDIR  (writes OUTDIR/vmlinuz,
# OUTDIR/initrd.img, OUTDIR/manifest.txt; no-op if the stamp is current).
# SPDX-License-Identifier: GPL-2.0-or-later

set -eu

SELF=$(readlink -f "$0")
BED_TOOL=build-guest
BED_LIB=$(dirname "$SELF")/debian-bed.sh
. "$BED_LIB"
bed_parse_args "$@"
DMCRYPT_SRC=$(dirname "$SELF")/dmcrypt-setup.c
STAMP_WANT="$(bed_stamp "$SELF") dmcrypt-sha256=$(sha256sum <"$DMCRYPT_SRC" |
    cut -d' ' -f1)"
STAMP="$OUT/.build-guest.stamp"

bed_exit_if_current "$OUT/vmlinuz" "$OUT/initrd.img"

# Modules to put into the initramfs (dependencies are added automatically),
# in the order /init loads them.
MODULES="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
virtio_pci virtio_blk virtio_scsi sd_mod crc32c_generic ext4
dm_mod dm_crypt ecb xts aes_generic"
# mkfs.ext4 and e2fsck for softdev.mode=fs (busybox has only ext2's
# mke2fs), with the libraries they link
FSPKGS="e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 libss2 libc6"

bed_check_tools apt-get apt-cache dpkg-deb depmod modprobe cpio gzip sha256sum \
    gcc

TMP=$(mktemp -d "${TMPDIR:-/tmp}/softdev-guest.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

bed_pick_kernel
# shellcheck disable=SC2086
bed_download "$KPKG" busybox-static $FSPKGS
KDEB_VER=$(dpkg-deb -f "$(bed_deb_of "$KPKG")" Version)
BDEB_VER=$(dpkg-deb -f "$(bed_deb_of busybox-static)" Version)
bed_unpack_kernel_busybox
bed_resolve_modules "$MODULES" "$TMP/modlist"

# ---- assemble the initramfs tree ------------------------------------------
R="$TMP/root"
bed_busybox_root "$R"
bed_install_modules "$R" "$TMP/modlist" softdev
bed_module_loader "$R" softdev
# ext4 tools from Debian: the two programs, the libraries, the loader
for p in $FSPKGS; do
    dpkg-deb -x "$(bed_deb_of "$p")" "$TMP/fs"
done
mkdir -p "$R/usr/sbin" "$R/etc"
cp "$TMP/fs/sbin/mke2fs" "$R/usr/sbin/mkfs.ext4"
cp "$TMP/fs/sbin/e2fsck" "$R/usr/sbin/e2fsck"
cp "$TMP/fs/etc/mke2fs.conf" "$R/etc/mke2fs.conf"
rm -rf "$TMP/fs/lib/x86_64-linux-gnu/gconv" \
       "$TMP/fs/usr/lib/x86_64-linux-gnu/gconv"
for d in lib lib64 usr/lib; do
    [ -d "$TMP/fs/$d" ] && cp -a "$TMP/fs/$d/." "$R/$d/"
done
# (the binaries run on the host too: same Debian)
"$R/usr/sbin/mkfs.ext4" -V >/dev/null 2>&1 ||
    LD_LIBRARY_PATH="$R/lib/x86_64-linux-gnu" "$R/usr/sbin/mkfs.ext4" -V \
        >/dev/null 2>&1 || bed_die "mkfs.ext4 from $FSPKGS does not run"
# dm-crypt without dmsetup or udev (softdev.dmcrypt= below)
gcc -std=gnu11 -O2 -Wall -static -o "$R/bin/dmcrypt-setup" "$DMCRYPT_SRC"

# ---- /init -------------------------------------------------------------------
cat >"$R/init" <<'EOF_INIT'
#!/bin/sh
# softdev guest /init: load virtio modules, then run the test selected by
# softdev.mode= on the kernel command line (verify, pattern, pattern-check,
# fs, fs-check, shell) and report on the console with SOFTDEV-* marker
# lines.
# SPDX-License-Identifier: GPL-2.0-or-later

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo "SOFTDEV-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

load-modules

MODE=shell DEV=/dev/vda ROUNDS=5 MIB=4 SLOTS= START=0 STOP= DMCRYPT= COPIES=0
for w in $(cat /proc/cmdline); do
    case "$w" in
        softdev.dmcrypt=*) DMCRYPT=${w#*=} ;;
        softdev.mode=*)   MODE=${w#*=} ;;
        softdev.dev=*)    DEV=${w#*=} ;;
        softdev.rounds=*) ROUNDS=${w#*=} ;;
        softdev.mib=*)    MIB=${w#*=} ;;
        softdev.copies=*) COPIES=${w#*=} ;;
        softdev.slots=*)  SLOTS=${w#*=} ;;
        softdev.start=*)  START=${w#*=} ;;
        softdev.stop=*)   STOP=${w#*=} ;;
    esac
done

MB=1048576
ERRORS=0

finish() {
    sync
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}

# Wait up to 10 s for the block device; sets DEVBYTES.
wait_dev() {
    i=0
    while [ ! -b "$DEV" ] && [ $i -lt 100 ]; do
        usleep 100000; i=$((i + 1))
    done
    [ -b "$DEV" ] || return 1
    DEVBYTES=$(( $(cat "/sys/class/block/${DEV##*/}/size") * 512 ))
}

md5_of() {
    set -- $(md5sum <"$1")
    echo "$1"
}

# Report kernel I/O errors; adds them to ERRORS.
check_dmesg() {
    dmesg | grep -i 'I/O error' >/tmp/ioerr || true
    while read -r line; do
        echo "SOFTDEV-IOERROR $line"
        ERRORS=$((ERRORS + 1))
    done </tmp/ioerr
}

# True once the host wrote "STOP" at the start of the softdev.stop= disk:
# verify's rounds then end early, so the host decides how long it runs.
stop_asked() {
    [ -n "$STOP" ] && [ -b "$STOP" ] &&
        [ "$(dd if="$STOP" bs=512 count=1 iflag=direct status=none \
             2>/dev/null | head -c 4)" = STOP ]
}

result() {
    if [ "$ERRORS" -eq 0 ]; then
        echo "SOFTDEV-RESULT PASS rounds=$ROUNDS errors=0"
    else
        echo "SOFTDEV-RESULT FAIL errors=$ERRORS"
    fi
}

# read_md5 OFFSET_MIB COUNT_MIB -> prints md5 of device bytes (O_DIRECT)
read_md5() {
    dd if="$DEV" of=/tmp/rb bs=$MB skip="$1" count="$2" iflag=direct \
       status=none 2>/tmp/dd.err || return 1
    [ "$(stat -c %s /tmp/rb)" -eq $(( $2 * MB )) ] || {
        echo "short read" >/tmp/dd.err; return 1; }
    md5_of /tmp/rb
    rm -f /tmp/rb
}

mode_verify() {
    wait_dev || { echo "SOFTDEV-RESULT FAIL errors=1 (no device $DEV)"; return; }
    len=$((MIB * MB))
    K=$((DEVBYTES / len))
    if [ -n "$SLOTS" ] && [ "$SLOTS" -lt "$K" ]; then K=$SLOTS; fi
    if [ "$K" -lt 1 ]; then
        echo "SOFTDEV-RESULT FAIL errors=1 (device too small: $DEVBYTES bytes)"
        return
    fi
    echo "SOFTDEV-INFO dev=$DEV bytes=$DEVBYTES rounds=$ROUNDS mib=$MIB slots=$K"
    : >/tmp/regions                      # lines: offset length md5
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        if stop_asked; then
            echo "SOFTDEV-STOPPED after $((r - 1)) rounds"
            ROUNDS=$((r - 1))
            break
        fi
        reason=
        slot=$(( (r - 1) % K ))
        off=$((slot * len))
        if ! dd if=/dev/urandom of=/tmp/data bs=$MB count="$MIB" \
                iflag=fullblock status=none 2>/tmp/dd.err; then
            reason="generate: $(head -n 1 /tmp/dd.err)"
        fi
        if [ -z "$reason" ]; then
            md5=$(md5_of /tmp/data)
            # The region's expected content is unknown until the write succeeds.
            grep -v "^$off " /tmp/regions >/tmp/regions.new || true
            mv /tmp/regions.new /tmp/regions
            # conv=fsync: the disk sees a flush after every round's write,
            # as it would under a real application's fsync().
            if dd if=/tmp/data of="$DEV" bs=$MB seek=$((slot * MIB)) \
                  count="$MIB" oflag=direct conv=notrunc,fsync status=none \
                  2>/tmp/dd.err; then
                echo "$off $len $md5" >>/tmp/regions
            else
                reason="write off=$off: $(head -n 1 /tmp/dd.err)"
            fi
        fi
        rm -f /tmp/data
        sync
        echo 3 >/proc/sys/vm/drop_caches
        bad=0
        while read -r o l m; do
            if ! got=$(read_md5 $((o / MB)) $((l / MB))); then
                bad=$((bad + 1))
                [ -n "$reason" ] ||
                    reason="read off=$o: $(head -n 1 /tmp/dd.err)"
            elif [ "$got" != "$m" ]; then
                bad=$((bad + 1))
                [ -n "$reason" ] ||
                    reason="mismatch off=$o want=$m got=$got"
            fi
        done </tmp/regions
        if [ -z "$reason" ]; then
            echo "SOFTDEV-ROUND $r ok"
        else
            [ "$bad" -le 1 ] || reason="$reason (+$((bad - 1)) more bad regions)"
            echo "SOFTDEV-ROUND $r FAIL $reason"
            ERRORS=$((ERRORS + 1))
        fi
        r=$((r + 1))
    done
    sort -n /tmp/regions | while read -r o l m; do
        echo "SOFTDEV-REGION $o $l $m"
    done
    check_dmesg
    result
}

# MiB number N of the deterministic pattern: 32768 lines of 32 bytes,
# "SOFTDEV PATTERN MIB %011d\n" with N the absolute MiB index on the device.
pattern_block() {
    yes "$(printf 'SOFTDEV PATTERN MIB %011d' "$1")" | head -c $MB >/tmp/pat
    [ "$(stat -c %s /tmp/pat)" -eq $MB ]
}

# mode_pattern WRITE(1|0): write (optional) then verify the pattern over
# MiB START .. START+MIB-1 (softdev.mib=0 or past the end: up to end of disk).
mode_pattern() {
    wait_dev || { echo "SOFTDEV-RESULT FAIL errors=1 (no device $DEV)"; return; }
    total=$((DEVBYTES / MB))
    n=$MIB
    if [ "$n" -eq 0 ] || [ $((START + n)) -gt "$total" ]; then
        n=$((total - START))
    fi
    ROUNDS=1
    echo "SOFTDEV-INFO dev=$DEV bytes=$DEVBYTES pattern start=$START mib=$n write=$1"
    i=$START
    end=$((START + n))
    if [ "$1" = 1 ]; then
        while [ $i -lt $end ]; do
            if ! pattern_block $i ||
               ! dd if=/tmp/pat of="$DEV" bs=$MB seek=$i count=1 oflag=direct \
                    conv=notrunc status=none 2>/tmp/dd.err; then
                echo "SOFTDEV-MISMATCH mib=$i write: $(head -n 1 /tmp/dd.err)"
                ERRORS=$((ERRORS + 1))
            fi
            i=$((i + 1))
        done
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    i=$START
    while [ $i -lt $end ]; do
        pattern_block $i
        want=$(md5_of /tmp/pat)
        if ! got=$(read_md5 $i 1); then
            echo "SOFTDEV-MISMATCH mib=$i read: $(head -n 1 /tmp/dd.err)"
            ERRORS=$((ERRORS + 1))
        elif [ "$got" != "$want" ]; then
            echo "SOFTDEV-MISMATCH mib=$i want=$want got=$got"
            ERRORS=$((ERRORS + 1))
        fi
        i=$((i + 1))
    done
    rm -f /tmp/pat
    echo "SOFTDEV-PATTERN start=$START mib=$n"
    check_dmesg
    result
}

# softdev.dmcrypt=SECTOR_SIZE:HEXKEY: the mode runs on a dm-crypt
# aes-xts-plain64 mapping (plain mode, no header) of softdev.dev
if [ -n "$DMCRYPT" ]; then
    wait_dev || { echo "SOFTDEV-RESULT FAIL errors=1 (no device $DEV)"; finish; }
    if ! mapped=$(dmcrypt-setup sdcrypt "$DEV" "${DMCRYPT%%:*}" \
                  "${DMCRYPT#*:}" 2>/tmp/dm.err); then
        echo "SOFTDEV-RESULT FAIL errors=1 (dm-crypt: $(cat /tmp/dm.err))"
        finish
    fi
    echo "SOFTDEV-DMCRYPT $DEV -> $mapped sector_size=${DMCRYPT%%:*}"
    DEV=$mapped
fi

# mode_fs WRITE(1|0): with 1, make ext4 on DEV and write MIB files of
# random data, COPIES copies of each (cp: the same data in other blocks,
# for a deduplicating disk) and their MD5SUMS; then (both) e2fsck -fn the
# unmounted file system, mount it again and check every file against
# MD5SUMS.
mode_fs() {
    wait_dev || { echo "SOFTDEV-RESULT FAIL errors=1 (no device $DEV)"; return; }
    ROUNDS=1
    mkdir -p /mnt/fs
    if [ "$1" = 1 ]; then
        mkfs.ext4 -q -F "$DEV" >/tmp/mkfs.log 2>&1 || {
            echo "SOFTDEV-RESULT FAIL errors=1 (mkfs.ext4: $(head -n 1 /tmp/mkfs.log))"
            return; }
        mount -t ext4 "$DEV" /mnt/fs || {
            echo "SOFTDEV-RESULT FAIL errors=1 (mount after mkfs)"; return; }
        i=0
        while [ $i -lt "$MIB" ]; do
            dd if=/dev/urandom of=/mnt/fs/f$i bs=$MB count=1 status=none
            c=0
            while [ $c -lt "$COPIES" ]; do
                cp /mnt/fs/f$i /mnt/fs/f$i.copy$c
                c=$((c + 1))
            done
            i=$((i + 1))
        done
        (cd /mnt/fs && md5sum f* >MD5SUMS)
        umount /mnt/fs || ERRORS=$((ERRORS + 1))
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    if e2fsck -fn "$DEV" >/tmp/fsck.log 2>&1; then
        echo "SOFTDEV-FSCK clean"
    else
        echo "SOFTDEV-FSCK FAIL $(tail -n 1 /tmp/fsck.log)"
        ERRORS=$((ERRORS + 1))
    fi
    if mount -t ext4 -o ro "$DEV" /mnt/fs; then
        if (cd /mnt/fs && md5sum -c MD5SUMS >/tmp/md5.log 2>&1); then
            echo "SOFTDEV-FS files=$(wc -l </mnt/fs/MD5SUMS) ok"
        else
            echo "SOFTDEV-MISMATCH fs $(grep -v ': OK$' /tmp/md5.log | head -n 1)"
            ERRORS=$((ERRORS + 1))
        fi
        umount /mnt/fs
    else
        echo "SOFTDEV-MISMATCH fs: cannot mount"
        ERRORS=$((ERRORS + 1))
    fi
    check_dmesg
    result
}

echo "SOFTDEV-READY mode=$MODE uptime=$(cut -d' ' -f1 /proc/uptime)"
case "$MODE" in
    verify)        mode_verify ;;
    pattern)       mode_pattern 1 ;;
    pattern-check) mode_pattern 0 ;;
    fs)            mode_fs 1 ;;
    fs-check)      mode_fs 0 ;;
    shell)
        echo "SOFTDEV-SHELL (exit the shell to power off)"
        setsid cttyhack sh -l || sh
        ;;
    *)
        echo "SOFTDEV-RESULT FAIL errors=1 (unknown softdev.mode=$MODE)"
        ;;
esac
finish
EOF_INIT
chmod 755 "$R/init"

# ---- pack ------------------------------------------------------------------
bed_pack "$R" "$TMP/initrd.img"

mkdir -p "$OUT"
rm -f "$STAMP"
bed_install "$VMLINUZ" "$OUT/vmlinuz"
bed_install "$TMP/initrd.img" "$OUT/initrd.img"
{
    echo "kernel-package $KPKG $KDEB_VER"
    echo "busybox-package busybox-static $BDEB_VER"
    echo "kernel-version $KVER"
    echo "modules $(tr '\n' ' ' <"$R/etc/softdev-modules")"
    (cd "$OUT" && sha256sum vmlinuz initrd.img)
} >"$OUT/manifest.txt"
echo "$STAMP_WANT" >"$STAMP"
echo "build-guest: wrote $OUT/vmlinuz $OUT/initrd.img ($KPKG $KDEB_VER)"
