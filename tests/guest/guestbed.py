#!/usr/bin/python3
# Boot the softdev test guest (built by build-guest.sh) under QEMU/TCG, capture
# its serial console, and talk QMP to the VM.  Library (GuestBed, QMP) and CLI:
#   guestbed.py --qemu Q --kernel K --initrd I --disk IMG [--mode verify ...]
# Python 3.11 standard library only.
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Debian's packaged firmware (packages seabios, qemu-system-data), so that a
# QEMU binary run from its build tree does not depend on <builddir>/qemu-bundle.
FIRMWARE_DIRS = ("/usr/share/seabios", "/usr/share/qemu")

BASE_APPEND = "console=ttyS0 quiet panic=-1"

MIB = 1024 * 1024

# Terminal control sequences SeaBIOS/Linux put on the serial line.
ANSI_RE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])")


class GuestError(Exception):
    """The guest/QEMU died or misbehaved while we were waiting for it."""


class QMPError(Exception):
    """A QMP command returned an error; .desc is the error description."""

    def __init__(self, desc, klass=None):
        super().__init__(desc)
        self.desc = desc
        self.klass = klass


class QMP:
    """Minimal synchronous QMP client over a unix socket (JSON lines).
    path is the socket's path, or a (host, port) tuple for a TCP server."""

    def __init__(self, path, timeout=30.0, connect_timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.events = []
        self.greeting = None
        self._buf = b""
        self._id = 0
        self._sock = None
        deadline = time.monotonic() + connect_timeout
        while True:
            if isinstance(path, tuple):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            else:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._sock = s
        self.greeting = self._recv(time.monotonic() + self.timeout)
        if "QMP" not in self.greeting:
            raise QMPError("bad QMP greeting: %r" % (self.greeting,))
        self.cmd("qmp_capabilities")

    def close(self):
        if self._sock:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, deadline):
        """Return the next JSON object from the socket."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("QMP: no data from %s" % (self.path,))
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise GuestError("QMP: connection closed by QEMU")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._recv(deadline)
        return json.loads(line)

    def cmd_raw(self, name, args=None):
        """Execute a command, return the whole reply dict (return or error)."""
        self._id += 1
        msg = {"execute": name, "id": self._id}
        if args:
            msg["arguments"] = args
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + self.timeout
        while True:
            obj = self._recv(deadline)
            if "event" in obj:
                self.events.append(obj)
            elif obj.get("id") == self._id:
                return obj

    def cmd(self, _name, _args=None, **kwargs):
        """Execute a command.  Arguments come from the dict _args (for names
        with '-') and/or keyword arguments.  Returns the 'return' value or
        raises QMPError."""
        args = dict(_args or {})
        args.update(kwargs)
        reply = self.cmd_raw(_name, args)
        if "error" in reply:
            err = reply["error"]
            raise QMPError(err.get("desc", str(err)), err.get("class"))
        return reply.get("return")

    def hmp(self, command_line):
        """Run a human monitor command, return its text output."""
        return self.cmd("human-monitor-command", {"command-line": command_line})

    def wait_event(self, name, timeout=30.0):
        """Return (and remove from .events) the first event called name,
        reading more from QEMU until it arrives or timeout expires."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name:
                    return self.events.pop(i)
            obj = self._recv(deadline)
            if "event" in obj:
                self.events.append(obj)


def firmware_args():
    """-L options for the firmware directories that exist."""
    return [a for d in FIRMWARE_DIRS for a in ("-L", d)]


def qemu_argv(qemu, kernel, initrd, append="", extra_args=(), qmp_path=None,
              memory=512):
    """QEMU command line for the test guest (TCG, serial console on stdio)."""
    # -nodefaults: without it q35 gets an empty AHCI CD-ROM that SeaBIOS
    # probes for ~30 s under TCG before booting the kernel.
    args = [qemu, "-nodefaults",
            "-machine", "q35", "-accel", "tcg", "-cpu", "max",
            "-m", str(memory),
            "-nographic", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-nic", "none"]
    if qmp_path:
        args += ["-qmp", "unix:%s,server=on,wait=off" % qmp_path]
    else:
        args += ["-monitor", "none"]
    args += firmware_args()
    args += list(extra_args)
    args += ["-kernel", kernel, "-initrd", initrd,
             "-append", (BASE_APPEND + " " + append).strip()]
    return args


class GuestBed:
    """One QEMU/TCG run of the softdev guest.

    The serial console goes to QEMU's stdout; a background thread appends each
    line (with a monotonic timestamp) to an in-memory list and to log_path.
    """

    def __init__(self, qemu, kernel, initrd, append="", extra_args=(),
                 qmp_path=None, log_path=None, memory=512, echo=False):
        self._init_state("guestbed-", qmp_path, log_path, echo)
        self.args = qemu_argv(qemu, kernel, initrd, append, extra_args,
                              self.qmp_path, memory)
        self._start()

    def _init_state(self, prefix, qmp_path, log_path, echo):
        """A work directory and empty console state (for subclasses that
        build their own command line too)."""
        self.workdir = tempfile.mkdtemp(prefix=prefix)
        self.qmp_path = qmp_path or os.path.join(self.workdir, "qmp.sock")
        self.log_path = log_path or os.path.join(self.workdir, "console.log")
        self.echo = echo
        self._lines = []            # (monotonic time, text)
        self._cursor = 0            # next line wait_for() looks at
        self._cond = threading.Condition()
        self._eof = False
        self._qmp = None
        self.stderr_lines = []

    def _start(self):
        """Start QEMU with self.args and the console and stderr readers."""
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.start_time = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._threads = [
            threading.Thread(target=self._read_console, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    # -- background readers ------------------------------------------------
    def _add_line(self, text):
        text = ANSI_RE.sub("", text).rstrip("\r")
        with self._cond:
            self._lines.append((time.monotonic(), text))
            self._log.write(text + "\n")
            self._log.flush()
            self._cond.notify_all()
        if self.echo:
            print(text, flush=True)

    def _read_console(self):
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._add_line(line.decode("utf-8", "replace"))
        if buf:
            self._add_line(buf.decode("utf-8", "replace"))
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stderr_lines.append(text)
            with self._cond:
                self._log.write("[qemu stderr] " + text + "\n")
                self._log.flush()
            if self.echo:
                print("[qemu stderr] " + text, file=sys.stderr, flush=True)

    # -- console -------------------------------------------------------------
    def lines(self):
        """All console lines so far (without timestamps)."""
        with self._cond:
            return [t for _, t in self._lines]

    def timed_lines(self):
        """All console lines so far as (seconds since QEMU start, text)."""
        with self._cond:
            return [(ts - self.start_time, t) for ts, t in self._lines]

    def wait_for(self, regex, timeout=60.0):
        """Wait for a console line (after the previous match) matching regex;
        return the re.Match.  Raises TimeoutError, or GuestError if QEMU's
        output ends first."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._cursor < len(self._lines):
                    text = self._lines[self._cursor][1]
                    self._cursor += 1
                    m = pat.search(text)
                    if m:
                        return m
                if self._eof:
                    raise GuestError("QEMU exited (rc=%s) before %r; %s"
                                     % (self.proc.poll(), regex, self._tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timeout (%ss) waiting for %r; %s"
                                       % (timeout, regex, self._tail()))
                self._cond.wait(left)

    def _tail(self, n=15):
        out = [t for _, t in self._lines[-n:]] + \
              ["[qemu stderr] " + t for t in self.stderr_lines[-5:]]
        return "last output:\n  " + "\n  ".join(out)

    def write(self, text):
        """Send text to the guest console (serial input)."""
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    # -- QMP / lifetime -----------------------------------------------------------
    def qmp(self):
        """The QMP connection (connected on first use)."""
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path)
        return self._qmp

    def wait_exit(self, timeout=60.0):
        """Wait for QEMU to exit; return its exit code (TimeoutError if not)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("QEMU still running after %ss" % timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def kill(self):
        """Stop QEMU (SIGTERM, then SIGKILL) and release resources."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(5)
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


# -- helpers for tests -------------------------------------------------------
class Shell:
    """Commands on the guest's console shell, one at a time"""

    def __init__(self, bed, timeout):
        self.bed, self.timeout, self.n = bed, timeout, 0

    def run(self, cmd, timeout=None):
        """Run @cmd; return (exit status, its output lines)"""
        self.n += 1
        tag = f'@@{self.n}@@'
        start = len(self.bed.lines())
        self.bed.write(f'{cmd}; echo "{tag} $?"\n')
        m = self.bed.wait_for(re.escape(tag) + r' (\d+)$',
                              timeout or self.timeout)
        lines = self.bed.lines()[start:]
        out = [t for t in lines if tag not in t and not t.endswith(cmd)]
        return int(m.group(1)), out

    def ok(self, cmd, errors, what, timeout=None):
        rc, out = self.run(cmd, timeout)
        if rc:
            errors.append(f'{what}: exit {rc}: {" | ".join(out[-5:])}')
        return out


def parse_regions(lines):
    """[(offset, length, md5)] from SOFTDEV-REGION console lines."""
    out = []
    for line in lines:
        m = re.search(r"SOFTDEV-REGION (\d+) (\d+) ([0-9a-f]{32})", line)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def check_regions(image, regions, table=None):
    """Compare SOFTDEV-REGION md5s with a raw image; return list of errors.
    With table (bytes.translate), the image holds a byte-wise transform of
    the guest's data, such as a soft device's XOR."""
    errors = []
    with open(image, "rb") as f:
        for off, length, md5 in regions:
            f.seek(off)
            data = f.read(length)
            if table is not None:
                data = data.translate(table)
            got = hashlib.md5(data).hexdigest()
            if got != md5:
                errors.append("region %d+%d: guest %s, image %s"
                              % (off, length, md5, got))
    return errors


def wait_for_socket(path, proc):
    """Wait up to 5 s for the soft-device process @proc to listen on
    @path."""
    for _ in range(500):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise RuntimeError(f'device exited with {proc.returncode}')
        time.sleep(0.01)
    raise RuntimeError(f'device did not listen on {path}')


def boot_for_result(args, name, append, disk, work, errors,
                    shown=('SOFTDEV-FS',)):
    """One guest run (args.qemu, args.guest_dir, args.timeout) whose
    SOFTDEV-RESULT must be PASS; its log goes to @work.  On a failure
    the reason goes to @errors, else a line with the console lines that
    start with one of @shown is printed."""
    log = os.path.join(work, name.replace(' ', '-') + '.log')
    with GuestBed(args.qemu, os.path.join(args.guest_dir, 'vmlinuz'),
                  os.path.join(args.guest_dir, 'initrd.img'),
                  append, disk, log_path=log) as bed:
        try:
            m = bed.wait_for(r'SOFTDEV-RESULT (\S+)', args.timeout)
            bed.wait_exit(60)
        except (TimeoutError, GuestError) as e:
            errors.append('%s: %s (%s)' % (name, e, log))
            return
        lines = bed.lines()
    if m.group(1) != 'PASS':
        bad = [t for t in lines if 'MISMATCH' in t or 'RESULT' in t or
               'IOERROR' in t or 'FAIL' in t]
        errors.append('%s: %s' % (name, '; '.join(bad[:4])))
    else:
        print('%s: PASS %s' % (name, '; '.join(
            t for t in lines if t.startswith(tuple(shown)))))


def image_test_args(doc):
    """The arguments of a guest test of an image format: --qemu,
    --guest-dir, --timeout (of each boot)"""
    ap = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest-dir', required=True)
    ap.add_argument('--timeout', type=float, default=300)
    return ap.parse_args()


def checked_image_info(qemu_img, image, fmt, name, errors):
    """'qemu-img check' of @image (format @fmt) must find it clean: its
    format-specific information from 'qemu-img info', or None after
    adding the failure to @errors"""
    r = subprocess.run([qemu_img, 'check', '-f', fmt, image],
                       capture_output=True, text=True)
    if r.returncode:
        errors.append('%s: qemu-img check: %s' % (name, r.stdout + r.stderr))
        return None
    return json.loads(subprocess.run(
        [qemu_img, 'info', '--output=json', '-f', fmt, image], check=True,
        capture_output=True, text=True).stdout)['format-specific']['data']


def report(errors):
    """Print a test's errors and verdict; return its exit status."""
    for e in errors:
        print("ERROR: " + e)
    print("PASS" if not errors else "FAIL")
    return 0 if not errors else 1


def pattern_block(mib_index):
    """The 1 MiB the guest's pattern mode writes at MiB mib_index."""
    return (b"SOFTDEV PATTERN MIB %011d\n" % mib_index) * 32768


class StopDisk:
    """A small second disk that the guest's verify mode reads before each
    round (softdev.stop=): stop() writes STOP there, and the guest ends
    its rounds, so a test decides when the workload ends rather than
    guessing how many rounds its events will take.  Add .args after the
    disk under test, so that the guest sees it as .guest_dev, and
    .cmdline to the guest's kernel command line (verify mode)."""

    guest_dev = "/dev/vdb"
    max_rounds = 1000
    cmdline = "softdev.rounds=%d softdev.stop=%s" % (max_rounds, guest_dev)

    def __init__(self, path):
        self.path = path
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        self.args = ["-blockdev",
                     "driver=file,node-name=stop0,filename=%s,"
                     "cache.direct=on" % path,
                     "-device", "virtio-blk-pci,drive=stop0,id=stopdisk"]

    def stop(self):
        with open(self.path, "r+b") as f:
            f.write(b"STOP")


def tap_info(qmp, node="tap0"):
    """The query-softdevs entry of softdev-tap node @node."""
    found = [t for t in qmp.cmd("query-softdevs") if t["node-name"] == node]
    if not found:
        raise GuestError("query-softdevs does not list %s (did the guest "
                         "end?)" % node)
    return found[0]


def wait_reconnected(qmp, reconnects, timeout=20.0, node="tap0"):
    """Until softdev-tap node @node is connected after more than
    @reconnects reconnections; returns its query-softdevs entry."""
    deadline = time.monotonic() + timeout
    while True:
        info = tap_info(qmp, node)
        if info["connected"] and info["reconnects"] > reconnects:
            return info
        if time.monotonic() > deadline:
            raise GuestError("softdev-tap did not reconnect: %s" % info)
        time.sleep(0.02)


def tap_disk_args(image, server, timeout):
    """-blockdev/-device arguments for a virtio-blk disk (device id vd0)
    served through softdev-tap node tap0 (on-disconnect=queue,
    reconnect-delay=1, @timeout seconds) above @image, as raw node disk0;
    @server: the tap's server options, dotted ("server.type=unix,
    server.path=...")."""
    return ["-blockdev", "driver=file,node-name=file0,filename=%s" % image,
            "-blockdev", "driver=softdev-tap,node-name=tap0,file=file0,%s,"
            "on-disconnect=queue,timeout=%d,reconnect-delay=1"
            % (server, timeout),
            "-blockdev", "driver=raw,node-name=disk0,file=tap0",
            "-device", "virtio-blk-pci,drive=disk0,id=vd0"]


def disk_args(image, fmt="raw", cache_direct=False, node="disk0"):
    """-blockdev/-device arguments for a virtio-blk disk (device id disk0)."""
    direct = "on" if cache_direct else "off"
    return ["-blockdev",
            "driver=file,filename=%s,node-name=%s-file,cache.direct=%s"
            % (image, node, direct),
            "-blockdev",
            "driver=%s,file=%s-file,node-name=%s" % (fmt, node, node),
            "-device", "virtio-blk-pci,drive=%s,id=disk0" % node]


def main():
    ap = argparse.ArgumentParser(
        description="Boot the softdev test guest under QEMU/TCG; exit 0 iff "
                    "the guest reports SOFTDEV-RESULT PASS.")
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--guest-dir",
                    help="directory from build-guest.sh (default for "
                         "--kernel/--initrd)")
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--disk", help="disk image (virtio-blk, /dev/vda)")
    ap.add_argument("--format", default="raw", help="block driver (raw)")
    ap.add_argument("--mode", default="verify",
                    choices=["verify", "pattern", "pattern-check", "shell"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--append", default="", help="extra kernel parameters")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--log", help="console log file")
    ap.add_argument("--no-image-check", action="store_true",
                    help="skip comparing SOFTDEV-REGION md5s to the image")
    ap.add_argument("extra", nargs="*", help="extra QEMU arguments (after --)")
    a = ap.parse_args()
    kernel = a.kernel or (a.guest_dir and os.path.join(a.guest_dir, "vmlinuz"))
    initrd = a.initrd or (a.guest_dir and
                          os.path.join(a.guest_dir, "initrd.img"))
    if not kernel or not initrd:
        ap.error("need --kernel and --initrd (or --guest-dir)")

    append = "softdev.mode=%s softdev.dev=/dev/vda softdev.rounds=%d " \
             "softdev.mib=%d %s" % (a.mode, a.rounds, a.mib, a.append)
    extra = disk_args(a.disk, a.format) if a.disk else []
    extra += a.extra

    if a.mode == "shell":
        # Interactive: QEMU's serial console on this terminal.
        with tempfile.TemporaryDirectory(prefix="guestbed-") as d:
            return subprocess.call(qemu_argv(a.qemu, kernel, initrd, append,
                                             extra, os.path.join(d, "qmp")))

    t0 = time.monotonic()
    ok = False
    with GuestBed(a.qemu, kernel, initrd, append, extra,
                  log_path=a.log, echo=True) as bed:
        try:
            m = bed.wait_for(r"SOFTDEV-RESULT (PASS|FAIL)", a.timeout)
            ok = m.group(1) == "PASS"
            rc = bed.wait_exit(60)
            print("guestbed: QEMU exit code %d, %.1f s"
                  % (rc, time.monotonic() - t0))
        except (TimeoutError, GuestError) as e:
            print("guestbed: %s" % e, file=sys.stderr)
            ok = False
        regions = parse_regions(bed.lines())
    if ok and a.mode == "verify" and a.disk and a.format == "raw" \
            and not a.no_image_check:
        errors = check_regions(a.disk, regions)
        for e in errors:
            print("guestbed: IMAGE MISMATCH " + e)
        print("guestbed: image check: %d regions, %d mismatches"
              % (len(regions), len(errors)))
        ok = ok and not errors
    print("guestbed: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
