#!/usr/bin/python3
"""
Boot the softdev Xen test bed (built by build-xen-bed.sh) under QEMU/TCG:
Xen 4.17 with a Debian 6.1 PV dom0 whose toolstack (xl) creates one PV
domU, with our QEMU as the domU's device model (xl's
device_model_override).  Library (XenBed, Cpio, domain_config) and CLI:

  xenbed.py --qemu Q --bed-dir D --shell     a dom0 shell on this terminal

The outer QEMU runs Xen with the serial port (com1) on its stdout: Xen's
and dom0's console (dom0's hvc0 is relayed by Xen).  dom0's /init runs
/job/run.sh, which xenbed generates: it `xl create`s the domU, copies the
domU's console log (written by xenconsoled) to dom0's console with the
prefix "[domU] ", waits for the domU to end, and exits.  Marker lines:

  XENBED-DOM0-READY        dom0 toolstack up (xenstored, xenconsoled)
  XENBED-XL-CREATE <rc>    xl create finished
  [domU] XENBED-DOMU-EXIT <rc>   the domU's job (/job/domu.sh) ended
  XENBED-DOM0-EXIT <rc>    dom0's job ended (0: domU job passed and the
                           dom0 post step passed; 1: domU job failed;
                           2: dom0 post step failed; 3: xl create failed;
                           4: dom0 pre step failed); then dom0 powers off

The device model (a given qemu-system-x86_64 with its shared library
closure and keymaps) is packed per run into an extra initramfs member,
so a rebuilt QEMU needs no rebuild of the bed.

Python 3.11 standard library only.
SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import gzip
import io
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'guest'))

import guestbed  # noqa: E402
from guestbed import GuestError, QMP, QMPError  # noqa: E402,F401

# Where the device model lives inside dom0.
DM_PREFIX = '/opt/softdev'
DM_PATH = DM_PREFIX + '/bin/qemu-system-x86_64'
DM_LIBDIR = '/usr/lib/x86_64-linux-gnu'
# The device model's QMP, reached from the host through the outer QEMU's
# hostfwd to dom0 (dom0 is 10.0.2.15 on the outer user network).
DM_QMP_PORT = 4444
DM_QMP_ARGS = ['-qmp', 'tcp:0.0.0.0:%d,server=on,wait=off' % DM_QMP_PORT]

DOMU_NAME = 'xenbed-domu'

# Xen's command line (the first word, the image name, is added by QEMU's
# multiboot loader and skipped by Xen).  spec-ctrl=eager-fpu: Xen then
# switches vector state with each vCPU rather than lazily through CR0.TS
# and #NM, with which, under TCG, processes' vector stores now and then
# ran with another vCPU's registers (the first bytes of 6 % of dom0's
# 40 KiB memcpy()s wrong; test-xen-bed-fpu.py).  dom0 gets one vCPU: with
# two, processes in dom0 under TCG now and then ran with a wrong FS base
# (TLS): a busybox applet faulting on a TLS load, xl and xenstore clients
# aborting on heap corruption, qemu-dm corrupting received packets.  With
# one, none of that was seen (docs/xen.rst, The test bed).
XEN_APPEND = ('console=com1 com1=115200,8n1 dom0_mem={dom0_mem}M,'
              'max:{dom0_mem}M dom0_max_vcpus=1 spec-ctrl=eager-fpu '
              'loglvl=all guest_loglvl=all')
DOM0_APPEND = 'console=hvc0 earlyprintk=xen'
DOMU_APPEND = 'console=hvc0'

MIB = 1024 * 1024


# -- cpio (newc) writer ------------------------------------------------------
class Cpio:
    """Write an uncompressed newc cpio archive (as Linux's initramfs reads
    it) to a binary file object.  Parent directories are added as needed;
    paths are absolute in the target."""

    def __init__(self, fileobj, mtime=1700000000):
        self.f = fileobj
        self.mtime = mtime
        self.ino = 1
        self.dirs = set()
        self.names = set()

    def _pad(self, n):
        self.f.write(b'\0' * ((-n) % 4))

    def _entry(self, name, mode, data=b''):
        name = name.lstrip('/')
        nb = name.encode() + b'\0'
        hdr = '070701' + ''.join('%08X' % v for v in (
            self.ino, mode, 0, 0, 1, self.mtime, len(data),
            0, 0, 0, 0, len(nb), 0))
        self.ino += 1
        self.f.write(hdr.encode() + nb)
        self._pad(110 + len(nb))
        self.f.write(data)
        self._pad(len(data))

    def _parents(self, path):
        parts = path.strip('/').split('/')[:-1]
        for i in range(1, len(parts) + 1):
            self.dir('/' + '/'.join(parts[:i]))

    def dir(self, path, mode=0o755):
        path = '/' + path.strip('/')
        if path in self.dirs:
            return
        self._parents(path)
        self.dirs.add(path)
        self._entry(path, stat.S_IFDIR | mode)

    def file(self, path, data, mode=0o644):
        """Add a regular file with contents data (bytes or str)."""
        if isinstance(data, str):
            data = data.encode()
        self._parents(path)
        self.names.add(path)
        self._entry(path, stat.S_IFREG | mode, data)

    def files(self, files):
        """Add {path: data}; scripts (*.sh) executable."""
        for path, data in files.items():
            self.file(path, data, 0o755 if path.endswith('.sh') else 0o644)

    def copy(self, path, src, mode=None):
        """Add host file src (symlinks followed) as path."""
        with open(src, 'rb') as f:
            data = f.read()
        if mode is None:
            mode = stat.S_IMODE(os.stat(src).st_mode)
        self.file(path, data, mode)

    def copytree(self, path, src):
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            dst = path if rel == '.' else os.path.join(path, rel)
            self.dir(dst)
            for fn in sorted(files):
                self.copy(os.path.join(dst, fn), os.path.join(root, fn))

    def symlink(self, path, target):
        self._parents(path)
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def close(self):
        self._entry('TRAILER!!!', 0)
        # Linux looks for the next member of a concatenated initramfs at a
        # 4-byte boundary; pad generously.
        self.f.write(b'\0' * ((-self.f.tell()) % 512))


def concat_initrd(out_path, base_gz, build, single_gzip=False):
    """Write base_gz, padding, then an uncompressed cpio member filled by
    build(Cpio).  With single_gzip, write one gzip stream of base_gz's
    content and the new member instead: libxenguest gunzips a PV domU's
    ramdisk itself and takes its size from the gzip trailer, which must
    then cover everything."""
    if single_gzip:
        buf = io.BytesIO()
        with gzip.open(base_gz, 'rb') as f:
            shutil.copyfileobj(f, buf)
        buf.write(b'\0' * ((-buf.tell()) % 512))
        c = Cpio(buf)
        build(c)
        c.close()
        with open(out_path, 'wb') as out:
            out.write(gzip.compress(buf.getvalue(), 6, mtime=0))
        return
    with open(out_path, 'wb') as out:
        with open(base_gz, 'rb') as f:
            shutil.copyfileobj(f, out)
        out.write(b'\0' * ((-out.tell()) % 512))
        c = Cpio(out)
        build(c)
        c.close()


# -- device model packing ----------------------------------------------------
def snapshot_qemu(qemu, snap_dir, tries=4):
    """Copy the QEMU binary to snap_dir/bin (it may be relinked while we
    run); return the copy's path.  A copy taken in the middle of a relink
    does not run: then wait and copy again."""
    os.makedirs(os.path.join(snap_dir, 'bin'), exist_ok=True)
    dst = os.path.join(snap_dir, 'bin', os.path.basename(qemu))
    for i in range(tries):
        shutil.copy2(qemu, dst)
        r = subprocess.run([dst, '-version'], capture_output=True, text=True)
        if r.returncode == 0 and 'QEMU' in r.stdout:
            return dst
        if i + 1 < tries:
            time.sleep(5)
    raise RuntimeError('%s does not run (-version: rc %d, %s)'
                       % (qemu, r.returncode, (r.stderr or r.stdout).strip()))


def qemu_data_dirs(qemu):
    """QEMU's data directories as `qemu -L help` lists them."""
    out = subprocess.run([qemu, '-L', 'help'], capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def ldd_closure(binary):
    """[(soname, host path)] of binary's shared libraries, the dynamic
    loader included."""
    out = subprocess.run(['ldd', binary], capture_output=True, text=True,
                         check=True).stdout
    libs = []
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r'(\S+) => (\S+) \(0x', line)
        if m:
            libs.append((m.group(1), m.group(2)))
            continue
        m = re.match(r'(/\S+) \(0x', line)          # the loader
        if m:
            libs.append((os.path.basename(m.group(1)), m.group(1)))
            continue
        if 'not found' in line:
            raise RuntimeError('ldd %s: %s' % (binary, line))
    return libs


def find_keymaps(qemu):
    """The keymaps directory the (build tree) QEMU would use."""
    for d in qemu_data_dirs(qemu) + ['/usr/share/qemu']:
        k = os.path.join(d, 'keymaps')
        if os.path.isfile(os.path.join(k, 'en-us')):
            return k
    raise RuntimeError('no keymaps/en-us in the data directories of %s'
                       % qemu)


def add_device_model(cpio, qemu, snap, strip=True):
    """Pack the device model into cpio: the QEMU snapshot snap as DM_PATH,
    its libraries in DM_LIBDIR, and keymaps where the copy, relocated to
    DM_PREFIX, looks for data (libxl starts it with -vnc none, which loads
    the en-us keymap).  Returns the number of bytes added (about)."""
    snap_dir = os.path.dirname(os.path.dirname(snap))
    size = 0
    if strip and shutil.which('strip'):
        stripped = snap + '.stripped'
        subprocess.run(['strip', '--strip-debug', '-o', stripped, snap],
                       check=True)
        cpio.copy(DM_PATH, stripped, 0o755)
        size += os.path.getsize(stripped)
        os.unlink(stripped)
    else:
        cpio.copy(DM_PATH, snap, 0o755)
        size += os.path.getsize(snap)
    for soname, path in ldd_closure(snap):
        cpio.copy(os.path.join(DM_LIBDIR, soname), os.path.realpath(path))
        size += os.path.getsize(path)
    keymaps = find_keymaps(qemu)
    for d in qemu_data_dirs(snap):
        rel = os.path.relpath(d, snap_dir)
        dst = d if rel.startswith('..') else os.path.join(DM_PREFIX, rel)
        cpio.copytree(os.path.join(dst, 'keymaps'), keymaps)
    return size


def libsoftdev_example(name, work, static=False):
    """The bytes of libsoftdev's example program name (passthrough, xor,
    ...), built under work/libsoftdev: for dom0, which has the same Debian
    glibc as the host, or with static for a domU, which has no C
    library."""
    top = os.path.join(HERE, '..', '..')
    out = os.path.join(work, 'libsoftdev')
    subprocess.run([os.path.join(top, 'libsoftdev', 'build.sh'), top, out],
                   check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, SANITIZE='0') if static else None)
    prog = os.path.join(out, name)
    if static:
        prog += '-static'
        subprocess.run([os.environ.get('CC', 'gcc'), '-std=gnu11', '-O2',
                        '-pthread', '-static',
                        '-I' + os.path.join(top, 'libsoftdev'),
                        os.path.join(top, 'libsoftdev', 'examples',
                                     name + '.c'),
                        os.path.join(out, 'libsoftdev.a'), '-o', prog],
                       check=True, capture_output=True)
    with open(prog, 'rb') as f:
        return f.read()


# -- xl domain config --------------------------------------------------------
def xl_string(s):
    """s as an xl.cfg string: in single quotes if it has double quotes
    (JSON for -object, say), which xl takes literally; else in double
    quotes."""
    if '"' in s and "'" not in s and '\n' not in s:
        return "'%s'" % s
    if '"' in s or '\\' in s or '\n' in s:
        raise ValueError('cannot quote %r for xl.cfg' % s)
    return '"%s"' % s


def xl_list(items):
    """items as an xl.cfg list, one element a line."""
    if not items:
        return '[ ]'
    return '[\n%s\n]' % ',\n'.join('    ' + xl_string(i) for i in items)


def domain_config(name=DOMU_NAME, memory=256, vcpus=1, disks=(),
                  dm_args=(), extra='', qmp=True, more=()):
    """xl.cfg(5) text for the PV domU: kernel/ramdisk from /job, our QEMU
    as device model (it serves backendtype=qdisk disks and whatever
    dm_args add), its QMP on dom0's TCP port DM_QMP_PORT if qmp; more:
    further lines.  libxl starts a device model for a PV domain only if a
    device needs one (a qdisk disk, a vfb, a channel, ...)."""
    args = (DM_QMP_ARGS if qmp else []) + list(dm_args)
    lines = [
        'name = %s' % xl_string(name),
        'type = "pv"',
        'kernel = "/job/vmlinuz"',
        'ramdisk = "/job/domu-initrd"',
        'extra = %s' % xl_string((DOMU_APPEND + ' ' + extra).strip()),
        'memory = %d' % memory,
        'vcpus = %d' % vcpus,
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
        'disk = %s' % xl_list(disks),
        'device_model_version = "qemu-xen"',
        'device_model_override = %s' % xl_string(DM_PATH),
        'device_model_args = %s' % xl_list(args),
    ] + list(more)
    return '\n'.join(lines) + '\n'


def qdisk(target, vdev='xvda', access='rw'):
    """An xl disk spec for a disk served by QEMU (qdisk backend)."""
    return ('format=raw, vdev=%s, access=%s, backendtype=qdisk, target=%s'
            % (vdev, access, target))


RUN_SH = r'''#!/bin/sh
# /job/run.sh for dom0, generated by xenbed.py.
NAME=%(name)s
TIMEOUT=%(timeout)d
LOG=/var/log/xen/console/guest-$NAME.log
up() { cut -d' ' -f1 /proc/uptime; }
# dump FILE PREFIX: FILE on the console, each line prefixed with [PREFIX].
dump() {
    [ -f "$1" ] && sed "s/^/[$2] /" "$1"
}
# domid_of NAME: the domain's id, from xenstore; status 1 if there is no
# such domain, 2 if xenstore did not answer.  (Not "xl domid": an xl run
# beside "xl create" was seen to coincide with xl aborting on heap
# corruption, so background jobs leave xl alone.)
domid_of() {
    doms=$(xenstore-list /local/domain 2>/dev/null) || return 2
    st=1
    for d in $doms; do
        n=$(xenstore-read /local/domain/$d/name 2>/dev/null) || { st=2; continue; }
        if [ "$n" = "$1" ]; then
            echo "$d"
            return 0
        fi
    done
    return $st
}
# domain_gone NAME: NAME was not found three times in a row, a second apart
# (a lookup that fails once does not end the run).
domain_gone() {
    for i in 1 2 3; do
        domid_of "$1" >/dev/null && return 1
        [ $i = 3 ] || sleep 1
    done
    return 0
}
# follow_console FILE PREFIX: copy a domain's console log FILE to ours as
# it grows, each line prefixed with [PREFIX], with shell builtins only (a
# busybox "tail -f | sed" pipeline was seen to die at once, with a
# segfault of the re-executed busybox, now and then).  Touching /tmp/stop
# makes it copy what is left and end.
follow_console() {
    i=0
    while [ ! -f "$1" ] && [ $i -lt 300 ]; do
        usleep 100000
        i=$((i + 1))
    done
    exec 3<"$1" || return
    part=
    while :; do
        if IFS= read -r line <&3; then
            echo "[$2] $part$line"
            part=
        else
            part="$part$line"
            if [ -f /tmp/stop ]; then
                [ -z "$part" ] || echo "[$2] $part"
                return
            fi
            usleep 200000
        fi
    done
}
xenbed_pre() { :; }
xenbed_post() { :; }
# ---- test-specific part (may define xenbed_pre and xenbed_post) ----
%(dom0_script)s
# ----
xenbed_pre || { echo "XENBED-DOM0-PRE-FAILED"; exit 4; }
echo "XENBED-XL-CREATE-START uptime=$(up)"
xl %(xl_verbose)s create /job/domu.cfg >/tmp/xl-create.log 2>&1
rc=$?
dump /tmp/xl-create.log xl-create
# xl 4.17 here was seen to abort on heap corruption, in xl create (134,
# SIGABRT) or in its domain monitoring child, before the domU runs
# anything: then destroy what it made and create the domain once more.
if [ $rc -eq 134 ] ||
   { [ $rc -ne 0 ] && grep -q "corrupted\|died due to fatal signal" \
         /tmp/xl-create.log; }
then
    echo "XENBED-XL-CREATE-RETRY (xl aborted)"
    xl destroy "$NAME" 2>&1 | sed 's/^/[xl-destroy] /'
    t=0
    # (the device model must be gone too: the new one takes its QMP port)
    while { domid_of "$NAME" || pidof qemu-system-x86_64; } >/dev/null 2>&1 &&
          [ $t -lt 30 ]; do
        sleep 1; t=$((t + 1))
    done
    xl %(xl_verbose)s create /job/domu.cfg >/tmp/xl-create.log 2>&1
    rc=$?
    dump /tmp/xl-create.log xl-create
fi
echo "XENBED-XL-CREATE $rc uptime=$(up)"
if [ $rc -ne 0 ]; then
    dump /var/log/xen/qemu-dm-$NAME.log qemu-dm
    dump /var/log/xen/xl-$NAME.log xl
    exit 3
fi
follow_console "$LOG" domU &
FOLLOW=$!
t=0
until domain_gone "$NAME"; do
    if [ $t -ge $TIMEOUT ]; then
        echo "XENBED-DOMU-TIMEOUT after $TIMEOUT s"
        # (xl destroy may hang if the device model does)
        dump /var/log/xen/qemu-dm-$NAME.log qemu-dm
        DM_DUMPED=1
        xl destroy "$NAME"
        break
    fi
    sleep 1
    t=$((t + 1))
done
echo "XENBED-DOMU-GONE uptime=$(up)"
touch /tmp/stop
wait $FOLLOW
[ -n "${DM_DUMPED:-}" ] || dump /var/log/xen/qemu-dm-$NAME.log qemu-dm
dump /var/log/xen/xl-$NAME.log xl
rc=1
grep -q "XENBED-DOMU-EXIT 0" "$LOG" && rc=0
xenbed_post || rc=2
exit $rc
'''


def free_port():
    """A free TCP port on 127.0.0.1 (racy, as any such choice)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class XenBed(guestbed.GuestBed):
    """One QEMU/TCG run of the Xen bed.

    qemu: the qemu-system-x86_64 to use, both as outer machine and as the
    domU's device model in dom0 (copied first).  bed_dir: OUTDIR of
    build-xen-bed.sh.  domu_script: /job/domu.sh (its exit status is the
    domU's verdict).  xl_cfg: the domain config (domain_config()); None for
    no job at all (dom0 shell).  dom0_script: shell code run in dom0 before
    `xl create`; it may define xenbed_pre and xenbed_post functions.
    dom0_files/domu_files: {path: bytes|str} extra files.  domu_extra: more
    kernel parameters for the domU.  disk: a raw image attached to dom0 as
    virtio-blk (/dev/vda there).  dm_qmp: forward a free host port to
    dom0:DM_QMP_PORT (.qmp_port; see dm_qmp()).

    Console lines are in .lines() as for GuestBed; the domU's are prefixed
    with "[domU] " (see domu_lines())."""

    def __init__(self, qemu, bed_dir, domu_script='', xl_cfg=None,
                 dom0_script='', dom0_files=None, domu_files=None,
                 disk=None, dm_qmp=True, memory=2048, smp=2, dom0_mem=1024,
                 domu_timeout=120, log_path=None, echo=False,
                 xl_verbose='', interactive=False, cpu='max',
                 accel='tcg'):
        self._init_state('xenbed-', None, log_path, echo)
        self.qmp_port = free_port() if dm_qmp else None
        self.disk = disk

        t0 = time.monotonic()
        snap = snapshot_qemu(qemu, os.path.join(self.workdir, 'snap'))
        domu_initrd = os.path.join(self.workdir, 'domu-initrd')

        def build_domu(c):
            if domu_script:
                c.file('/job/domu.sh', domu_script, 0o755)
            c.files(domu_files or {})
        concat_initrd(domu_initrd, os.path.join(bed_dir, 'domu-base.cpio.gz'),
                      build_domu, single_gzip=True)

        dom0_initrd = os.path.join(self.workdir, 'dom0-initrd')

        def build_dom0(c):
            self.dm_bytes = add_device_model(c, qemu, snap)
            c.copy('/job/vmlinuz', os.path.join(bed_dir, 'vmlinuz'), 0o644)
            c.copy('/job/domu-initrd', domu_initrd, 0o644)
            if xl_cfg is not None:
                c.file('/job/domu.cfg', xl_cfg)
                m = re.search(r'^name\s*=\s*"([^"]*)"', xl_cfg, re.M)
                c.file('/job/run.sh', RUN_SH % {
                    'name': m.group(1) if m else DOMU_NAME,
                    'timeout': domu_timeout,
                    'dom0_script': dom0_script,
                    'xl_verbose': xl_verbose}, 0o755)
            else:
                # Example for manual use: xl create -c /job/domu.cfg
                c.file('/job/domu.cfg', domain_config(
                    disks=[qdisk('/dev/vda')] if disk else [],
                    extra='xenbed.shell=1'))
            c.files(dom0_files or {})
        concat_initrd(dom0_initrd, os.path.join(bed_dir, 'dom0-base.cpio.gz'),
                      build_dom0)
        self.pack_seconds = time.monotonic() - t0

        args = [snap, '-nodefaults', '-machine', 'q35', '-accel', accel,
                '-cpu', cpu, '-m', str(memory), '-smp', str(smp),
                '-nographic', '-display', 'none', '-no-reboot',
                '-serial', 'stdio',
                '-qmp', 'unix:%s,server=on,wait=off' % self.qmp_path]
        args += guestbed.firmware_args()
        if disk:
            args += guestbed.disk_args(disk)
        if dm_qmp:
            args += ['-netdev', 'user,id=net0,restrict=on,hostfwd=tcp:'
                     '127.0.0.1:%d-10.0.2.15:%d' % (self.qmp_port,
                                                    DM_QMP_PORT),
                     '-device', 'virtio-net-pci,netdev=net0,romfile=']
        else:
            args += ['-nic', 'none']
        # Multiboot modules: "path args" separated by commas.
        for p in (bed_dir, dom0_initrd):
            if ',' in p:
                raise ValueError('no commas allowed in %r' % p)
        args += ['-kernel', os.path.join(bed_dir, 'xen'),
                 '-append', XEN_APPEND.format(dom0_mem=dom0_mem),
                 '-initrd', '%s %s,%s' % (os.path.join(bed_dir, 'vmlinuz'),
                                          DOM0_APPEND, dom0_initrd)]
        self.args = args
        if interactive:
            self.proc = None
            return
        self._start()

    def kill(self):
        if self.proc is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        super().kill()

    # -- results ---------------------------------------------------------------
    def domu_lines(self):
        """The domU's console lines (as copied by dom0's job)."""
        return [t[7:] for t in self.lines() if t.startswith('[domU] ')]

    def dm_lines(self):
        """The device model's log (stdout/stderr), as dom0's job printed
        it after the domU ended."""
        return [t[10:] for t in self.lines() if t.startswith('[qemu-dm] ')]

    def marker_time(self, regex):
        """Seconds since QEMU start of the first line matching regex, or
        None."""
        pat = re.compile(regex)
        for ts, t in self.timed_lines():
            if pat.search(t):
                return ts
        return None

    def timings(self):
        """{event: seconds since QEMU start} for the bed's marker lines."""
        out = {}
        for key, regex in (('dom0-ready', r'^XENBED-DOM0-READY'),
                           ('xl-create', r'^XENBED-XL-CREATE -?\d'),
                           ('domu-ready', r'^\[domU\] XENBED-DOMU-READY'),
                           ('domu-exit', r'^\[domU\] XENBED-DOMU-EXIT'),
                           ('dom0-exit', r'^XENBED-DOM0-EXIT')):
            ts = self.marker_time(regex)
            if ts is not None:
                out[key] = round(ts, 1)
        return out

    def dm_qmp(self, timeout=60.0):
        """A new QMP connection to the device model (through the hostfwd);
        retried until it answers.  The caller closes it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return QMP(('127.0.0.1', self.qmp_port), timeout=30,
                           connect_timeout=5)
            except (OSError, GuestError, TimeoutError, QMPError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def finish(self, marker, check, timeout, errors, unfinished,
               job_ok=(0, 1)):
        """The end of a test's run: wait for the domU's console line
        "[domU] <marker>", then call check(qmp) with a QMP connection to
        the device model while the domU still runs (if the run ended
        first, note @unfinished in @errors instead), then wait for dom0's
        job, whose exit status must be in @job_ok, and for QEMU.  What
        fails goes to @errors."""
        try:
            self.wait_for(r'^\[domU\] %s|^XENBED-DOM0-EXIT' % marker, timeout)
            if any(marker in t for t in self.domu_lines()):
                with self.dm_qmp() as qmp:
                    check(qmp)
            else:
                errors.append(unfinished)
            rc = self.run(timeout)
            if rc not in job_ok:
                errors.append('dom0 job exit status %d' % rc)
            self.wait_exit(60)
        except (TimeoutError, GuestError, QMPError, OSError) as e:
            errors.append('%s: %s' % (type(e).__name__, e))

    def run(self, timeout=240.0, marker=None, callback=None):
        """Wait for dom0's job to end; return its exit status.  If marker
        (a regex) shows on the console first, call callback(self) then (the
        domU is still running; the callback may use dm_qmp()).  Raises
        TimeoutError or GuestError."""
        deadline = time.monotonic() + timeout
        exit_re = r'^XENBED-DOM0-EXIT (-?\d+)'
        if marker and callback:
            m = self.wait_for('(%s)|%s' % (marker, exit_re), timeout)
            if m.group(1):
                callback(self)
            else:
                return int(m.group(m.lastindex))
        m = self.wait_for(exit_re, max(1.0, deadline - time.monotonic()))
        return int(m.group(1))


# -- the command line of the Xen tests ------------------------------------------
BED_FILES = ('xen', 'vmlinuz', 'dom0-base.cpio.gz', 'domu-base.cpio.gz')


def test_arg_parser(doc, timeout, print_config=True):
    """The options every Xen test takes (--qemu, --bed-dir, --timeout,
    --verbose, and --print-config if the test has a domain config to
    show); the test adds its own."""
    ap = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    if print_config:
        ap.add_argument('--print-config', action='store_true',
                        help='print the xl domain config and exit')
    ap.add_argument('--qemu', help='qemu-system-x86_64 (outer machine and '
                    'device model)')
    ap.add_argument('--bed-dir', help='OUTDIR of tests/xen/build-xen-bed.sh')
    ap.add_argument('--timeout', type=float, default=timeout)
    ap.add_argument('-v', '--verbose', action='store_true',
                    help='echo the console')
    return ap


def parse_test_args(ap):
    """Parse; unless --print-config, insist on --qemu and a complete bed
    (exits with status 2 otherwise)."""
    a = ap.parse_args()
    if getattr(a, 'print_config', False):
        return a
    if not a.qemu or not a.bed_dir:
        ap.error('--qemu and --bed-dir are required')
    missing = [f for f in BED_FILES
               if not os.path.isfile(os.path.join(a.bed_dir, f))]
    if missing:
        ap.error('no %s in %s: run tests/xen/build-xen-bed.sh %s first'
                 % (', '.join(missing), a.bed_dir, a.bed_dir))
    return a


# -- helpers for domU jobs ------------------------------------------------------
DOMU_SH_LIB = r'''
MB=1048576
md5_of() { set -- $(md5sum <"$1"); echo "$1"; }
# pattern_block N: /tmp/pat = MiB N of the softdev pattern (guestbed.py's
# pattern_block): 32768 lines "SOFTDEV PATTERN MIB %011d\n".
pattern_block() {
    yes "$(printf 'SOFTDEV PATTERN MIB %011d' "$1")" | head -c $MB >/tmp/pat
    [ "$(stat -c %s /tmp/pat)" -eq $MB ]
}
'''


# -- the disk workload (test-xen-disk.py and tests built on it) ---------------
DISK_SCRIPT = r'''
DEV=/dev/xvda
ROUNDS=%(rounds)d REG_MIB=%(reg_mib)d STRIDE=%(stride)d NREG=%(nreg)d
ERR=0
[ -b $DEV ] || { echo "XENBED-RESULT FAIL no $DEV"; exit 1; }
echo "XENBED-DISK dev=$DEV bytes=$(( $(cat /sys/class/block/xvda/size) * 512 ))"
echo "XENBED-IO-START uptime=$(cut -d' ' -f1 /proc/uptime)"
: >/tmp/regions
r=0
while [ $r -lt $ROUNDS ]; do
    k=0
    while [ $k -lt $NREG ]; do
        start=$((k * STRIDE + r * REG_MIB + 1))
        : >/tmp/reg
        i=$start
        while [ $i -lt $((start + REG_MIB)) ]; do
            pattern_block $i && cat /tmp/pat >>/tmp/reg
            i=$((i + 1))
        done
        # Buffered write, flushed by fsync (conv=fsync).
        if dd if=/tmp/reg of=$DEV bs=$MB seek=$start count=$REG_MIB \
              conv=notrunc,fsync status=none 2>/tmp/dd.err; then
            echo "$((start * MB)) $((REG_MIB * MB)) $(md5_of /tmp/reg)" \
                >>/tmp/regions
        else
            echo "XENBED-ERROR write mib=$start: $(head -n 1 /tmp/dd.err)"
            ERR=$((ERR + 1))
        fi
        k=$((k + 1))
    done
    sync
    echo 3 >/proc/sys/vm/drop_caches
    # Re-read everything written so far, bypassing the page cache.
    while read -r o l m; do
        if ! dd if=$DEV of=/tmp/rb bs=$MB skip=$((o / MB)) count=$((l / MB)) \
                iflag=direct status=none 2>/tmp/dd.err; then
            echo "XENBED-ERROR read off=$o: $(head -n 1 /tmp/dd.err)"
            ERR=$((ERR + 1))
        elif [ "$(md5_of /tmp/rb)" != "$m" ]; then
            echo "XENBED-ERROR round $r: mismatch off=$o want=$m got=$(md5_of /tmp/rb)"
            ERR=$((ERR + 1))
        fi
    done </tmp/regions
    echo "XENBED-ROUND $r errors=$ERR uptime=$(cut -d' ' -f1 /proc/uptime)"
    r=$((r + 1))
done
while read -r o l m; do echo "SOFTDEV-REGION $o $l $m"; done </tmp/regions
if dmesg | grep -i 'I/O error'; then ERR=$((ERR + 1)); fi
if [ $ERR -eq 0 ]; then
    echo "XENBED-RESULT PASS"
    exit 0
fi
echo "XENBED-RESULT FAIL errors=$ERR"
exit 1
'''


def disk_regions(rounds, reg_mib, stride, nreg):
    """[(first MiB, MiBs)] the disk workload writes."""
    return [(k * stride + r * reg_mib + 1, reg_mib)
            for r in range(rounds) for k in range(nreg)]


def check_disk_image(image, guest_regions, plan):
    """Errors found comparing the image with what the domU reported and
    what it should have written: the pattern where planned, zeros
    elsewhere."""
    import hashlib
    errors = guestbed.check_regions(image, guest_regions)
    want = {}
    for start, n in plan:
        data = b''.join(guestbed.pattern_block(i)
                        for i in range(start, start + n))
        want[start * MIB] = (n * MIB, hashlib.md5(data).hexdigest())
    got = {off: (length, md5) for off, length, md5 in guest_regions}
    for off, (length, md5) in sorted(want.items()):
        if off not in got:
            errors.append('region %d+%d: not reported by the domU'
                          % (off, length))
        elif got[off] != (length, md5):
            errors.append('region %d+%d: domU wrote md5 %s, pattern is %s'
                          % (off, length, got[off][1], md5))
    written = set()
    for start, n in plan:
        written.update(range(start, start + n))
    zero = bytes(MIB)
    with open(image, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        for i in range(size // MIB):
            if i in written:
                continue
            f.seek(i * MIB)
            if f.read(MIB) != zero:
                errors.append('MiB %d: not written by the domU, '
                              'but not zero' % i)
    return errors


def run_disk_test(qemu, bed_dir, callback=None, rounds=3, reg_mib=2,
                  nreg=4, disk_mib=256, workdir=None, echo=False,
                  timeout=230.0):
    """The end-to-end disk test: a PV domU writes and verifies the softdev
    pattern on xvda, a qdisk disk served by our QEMU in dom0 on top of
    dom0's /dev/vda (a raw image on the host).  While the domU does I/O,
    connect to the device model's QMP (through the hostfwd), list its
    block nodes, and call callback(bed, qmp) if given.  Returns (errors,
    info dict)."""
    stride = disk_mib // nreg
    if rounds * reg_mib >= stride:
        raise ValueError('rounds * reg_mib must be < disk_mib / nreg')
    own = workdir is None
    work = workdir or tempfile.mkdtemp(prefix='xenbed-disk-')
    image = os.path.join(work, 'disk.img')
    with open(image, 'wb') as f:
        f.truncate(disk_mib * MIB)
    plan = disk_regions(rounds, reg_mib, stride, nreg)
    cfg = domain_config(disks=[qdisk('/dev/vda')], extra='xenbed.dev=/dev/xvda')
    script = DOMU_SH_LIB + DISK_SCRIPT % {
        'rounds': rounds, 'reg_mib': reg_mib, 'stride': stride,
        'nreg': nreg}
    errors = []
    info = {'xl_cfg': cfg, 'image': image,
            'log': os.path.join(work, 'console.log')}

    def on_io(bed):
        t = time.monotonic()
        with bed.dm_qmp() as qmp:
            info['qmp_connect_s'] = round(time.monotonic() - t, 1)
            nodes = qmp.cmd('query-named-block-nodes')
            info['nodes'] = [n['node-name'] for n in nodes]
            blocks = qmp.cmd('query-block')
            info['blocks'] = [(b.get('device') or '',
                               b.get('qdev') or '',
                               (b.get('inserted') or {}).get('node-name'))
                              for b in blocks]
            print('xenbed: device model block nodes: %s'
                  % ' '.join(info['nodes']), flush=True)
            print('xenbed: device model query-block: %s' % info['blocks'],
                  flush=True)
            if callback:
                callback(bed, qmp)

    t0 = time.monotonic()
    with XenBed(qemu, bed_dir, script, cfg, disk=image, echo=echo,
                log_path=info['log']) as bed:
        info['pack_s'] = round(bed.pack_seconds, 1)
        try:
            rc = bed.run(timeout, marker=r'^\[domU\] XENBED-IO-START',
                         callback=on_io)
            if rc != 0:
                errors.append('dom0 job exit status %d' % rc)
            bed.wait_exit(60)
        except (TimeoutError, GuestError, QMPError, OSError) as e:
            errors.append('%s: %s' % (type(e).__name__, e))
        info['timings'] = bed.timings()
        info['dm_log'] = bed.dm_lines()
        domu = bed.domu_lines()
    info['total_s'] = round(time.monotonic() - t0, 1)
    io_started = any('XENBED-IO-START' in t for t in domu)
    if not io_started:
        errors.append('the domU did not start its I/O')
    elif 'nodes' not in info:
        errors.append('no QMP connection to the device model')
    if not any(re.search(r'XENBED-RESULT PASS', t) for t in domu):
        errors.append('the domU did not report XENBED-RESULT PASS')
    for t in domu:
        if 'XENBED-ERROR' in t or 'XENBED-RESULT FAIL' in t:
            errors.append('domU: ' + t)
    regions = guestbed.parse_regions(domu)
    info['regions'] = len(regions)
    if regions:
        errors += check_disk_image(image, regions, plan)
    if own and not errors:
        shutil.rmtree(work, ignore_errors=True)
    return errors, info


def main():
    ap = argparse.ArgumentParser(
        description='Boot the softdev Xen bed (Xen 4.17, Debian dom0) under '
                    'QEMU/TCG with a dom0 shell on this terminal.  In dom0, '
                    '"xl create -c /job/domu.cfg" starts a PV domU (with a '
                    'shell) whose device model is --qemu.')
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--bed-dir', required=True,
                    help='OUTDIR of build-xen-bed.sh')
    ap.add_argument('--disk', help='raw image for dom0 (/dev/vda)')
    ap.add_argument('--shell', action='store_true', required=True,
                    help='interactive dom0 shell (the only mode)')
    a = ap.parse_args()
    bed = XenBed(a.qemu, a.bed_dir, disk=a.disk, dm_qmp=True,
                 interactive=True)
    try:
        print('xenbed: device model QMP on 127.0.0.1:%d (when a domU runs)'
              % bed.qmp_port, file=sys.stderr)
        return subprocess.call(bed.args)
    finally:
        bed.kill()


if __name__ == '__main__':
    sys.exit(main())
