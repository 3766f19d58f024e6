# debian-bed.sh: shell functions shared by the scripts that build test
# guests from Debian 12 (bookworm) packages (tests/guest/build-guest.sh,
# tests/xen/build-xen-bed.sh): picking and unpacking the kernel, resolving
# and installing its modules, busybox root trees and reproducible
# initramfs archives.  Sourced (POSIX sh) as "$BED_LIB"; the caller sets
# BED_LIB (this file's path), BED_TOOL (its name, for messages) and, before
# calling anything that unpacks, TMP (a scratch directory it removes).
# SPDX-License-Identifier: GPL-2.0-or-later

# Fixed timestamp for reproducible archives.
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# bed_parse_args "$@": the command line of the build scripts, OUTDIR;
# sets OUT.
bed_parse_args() {
    if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
        echo "usage: $BED_TOOL OUTDIR" >&2
        echo "  env SOFTDEV_KERNEL_PKG=linux-image-6.1.0-N-amd64 pins the" \
             "kernel" >&2
        exit 2
    fi
    OUT=$1
}

bed_die() {
    echo "$BED_TOOL: $*" >&2
    exit 1
}

# bed_check_tools TOOL...: every host tool is on PATH.
bed_check_tools() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 ||
            bed_die "missing host tool '$tool'"
    done
}

# bed_stamp SCRIPT: what a current build's stamp holds: the hashes of the
# script and of this library, and the kernel pin.
bed_stamp() {
    echo "script-sha256=$(sha256sum "$1" | cut -d' ' -f1)" \
         "lib-sha256=$(sha256sum "$BED_LIB" | cut -d' ' -f1)" \
         "kpkg=${SOFTDEV_KERNEL_PKG:-auto}"
}

# bed_exit_if_current FILE...: exit 0 if every FILE exists and $STAMP
# holds $STAMP_WANT (the output of this script and library is there).
bed_exit_if_current() {
    for f in "$@"; do
        [ -f "$f" ] || return 0
    done
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ]; then
        echo "$BED_TOOL: $OUT is up to date"
        exit 0
    fi
}

# bed_pick_kernel: set KPKG to $SOFTDEV_KERNEL_PKG or to the newest
# linux-image-6.1.0-N-amd64 that linux-image-amd64 depends on, KVER to its
# kernel version.
bed_pick_kernel() {
    KPKG=${SOFTDEV_KERNEL_PKG:-}
    if [ -z "$KPKG" ]; then
        KPKG=$(bed_newest_kpkg)
        if [ -z "$KPKG" ]; then
            apt-get update >&2
            KPKG=$(bed_newest_kpkg)
        fi
    fi
    case "$KPKG" in
        linux-image-6.1.0-*-amd64) ;;
        *) bed_die "cannot determine kernel package (got '$KPKG')" ;;
    esac
    KVER=${KPKG#linux-image-}
    echo "$BED_TOOL: kernel package $KPKG"
}

bed_newest_kpkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' |
        sort -V | tail -n 1
}

# bed_download PKG...: the packages' .debs into $TMP/debs, with an apt-get
# update and a second try when apt does not know one of them.
bed_download() {
    mkdir -p "$TMP/debs"
    if bed_apt_download "$@"; then
        return 0
    fi
    grep -q "Unable to locate\|Unable to find\|Can't select" "$TMP/apt.log" || {
        cat "$TMP/apt.log" >&2
        bed_die "apt-get download failed"
    }
    apt-get update >&2
    bed_apt_download "$@" || {
        cat "$TMP/apt.log" >&2
        bed_die "apt-get download failed"
    }
}

bed_apt_download() {
    (cd "$TMP/debs" && apt-get -q -o APT::Sandbox::User=root download "$@") \
        >"$TMP/apt.log" 2>&1
}

# bed_deb_of PKG: the downloaded .deb of PKG.
bed_deb_of() {
    for f in "$TMP"/debs/"$1"_*.deb; do
        [ -f "$f" ] || bed_die "package $1 was not downloaded"
        echo "$f"
        return
    done
}

# bed_unpack_kernel_busybox: unpack $KPKG into $TMP/k (setting VMLINUZ and
# KMOD, with a modules.dep: Debian ships none) and busybox-static into
# $TMP/bb.  Both must have been downloaded.
bed_unpack_kernel_busybox() {
    dpkg-deb -x "$(bed_deb_of "$KPKG")" "$TMP/k"
    dpkg-deb -x "$(bed_deb_of busybox-static)" "$TMP/bb"
    VMLINUZ="$TMP/k/boot/vmlinuz-$KVER"
    [ -f "$VMLINUZ" ] || bed_die "no vmlinuz-$KVER in $KPKG"
    # Normalise to <root>/lib/modules/KVER so depmod/modprobe -d find it.
    if [ ! -d "$TMP/k/lib/modules/$KVER" ] &&
       [ -d "$TMP/k/usr/lib/modules/$KVER" ]; then
        mkdir -p "$TMP/k/lib/modules"
        mv "$TMP/k/usr/lib/modules/$KVER" "$TMP/k/lib/modules/$KVER"
    fi
    KMOD="$TMP/k/lib/modules/$KVER"
    [ -d "$KMOD" ] || bed_die "no modules for $KVER"
    depmod -b "$TMP/k" "$KVER"
}

# bed_resolve_modules LIST OUTFILE: module files (relative to $KMOD) of
# the modules in LIST and their dependencies, in load order.
bed_resolve_modules() {
    : >"$2"
    for m in $1; do
        modprobe -d "$TMP/k" -S "$KVER" --show-depends "$m" \
            >"$TMP/dep" 2>"$TMP/dep.err" || {
            echo "$BED_TOOL: cannot resolve module $m:" >&2
            cat "$TMP/dep.err" >&2
            exit 1
        }
        # "insmod /path/x.ko [params]" or "builtin x"
        sed -n "s|^insmod $KMOD/\([^ ]*\).*|\1|p" "$TMP/dep" |
        while read -r rel; do
            grep -qxF "$rel" "$2" || echo "$rel" >>"$2"
        done
    done
}

# bed_busybox_root ROOT: a root tree with busybox, its applet links and
# the usual empty directories.
bed_busybox_root() {
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin" "$1/etc" \
             "$1/proc" "$1/sys" "$1/dev" "$1/tmp" "$1/mnt" "$1/root" \
             "$1/run"
    cp "$TMP/bb/bin/busybox" "$1/bin/busybox"
    chmod 755 "$1/bin/busybox"
    # (the binary is static x86-64: it runs on the host)
    "$1/bin/busybox" --list-full | while read -r app; do
        [ "$app" = bin/busybox ] && continue
        case "$(dirname "$app")" in
            bin) target=busybox ;;
            sbin) target=../bin/busybox ;;
            usr/bin|usr/sbin) target=../../bin/busybox ;;
            *) continue ;;
        esac
        [ -e "$1/$app" ] || ln -s "$target" "$1/$app"
    done
    [ -e "$1/bin/sh" ] || ln -s busybox "$1/bin/sh"
}

# bed_install_modules ROOT LISTFILE NAME: the module files of LISTFILE
# (from bed_resolve_modules) into ROOT, uncompressed, with their
# modules.dep; their paths in load order go to ROOT/etc/NAME-modules and
# the kernel version to ROOT/etc/NAME-kver, for /init.
bed_install_modules() {
    rm_=$1/lib/modules/$KVER
    mkdir -p "$rm_"
    : >"$1/etc/$3-modules"
    while read -r rel; do
        case "$rel" in
            *.ko) dst=$rel; cmd="cat" ;;
            *.ko.xz) dst=${rel%.xz}; cmd="xz -dc" ;;
            *.ko.zst) dst=${rel%.zst}; cmd="zstd -qdc" ;;
            *) bed_die "unexpected module file $rel" ;;
        esac
        mkdir -p "$rm_/$(dirname "$dst")"
        $cmd "$KMOD/$rel" >"$rm_/$dst"
        echo "$dst" >>"$1/etc/$3-modules"
    done <"$2"
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        if [ -f "$KMOD/$f" ]; then
            cp "$KMOD/$f" "$rm_/$f"
        fi
    done
    depmod -b "$1" "$KVER"
    echo "$KVER" >"$1/etc/$3-kver"
}

# bed_module_loader ROOT NAME: ROOT/sbin/load-modules, which /init runs
# (with /tmp mounted) to load the modules of bed_install_modules ROOT ...
# NAME in order; each failure but "File exists" is a SOFTDEV-WARN line.
bed_module_loader() {
    cat >"$1/sbin/load-modules" <<EOF
#!/bin/sh
KVER=\$(cat /etc/$2-kver)
while read -r m; do
    insmod "/lib/modules/\$KVER/\$m" 2>/tmp/insmod.err ||
        grep -q 'File exists' /tmp/insmod.err ||
        echo "SOFTDEV-WARN insmod \$m: \$(head -n 1 /tmp/insmod.err)"
done </etc/$2-modules
EOF
    chmod 755 "$1/sbin/load-modules"
}

# bed_pack ROOT OUTFILE: ROOT as a reproducible, gzip'd newc cpio archive.
bed_pack() {
    find "$1" -exec touch -h -d "@$EPOCH" {} +
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 >"$2"
}

# bed_install SRC DST: move SRC to DST through DST.tmp (a reader never
# sees half a file).
bed_install() {
    cp "$1" "$2.tmp"
    mv "$2.tmp" "$2"
}
