#!/usr/bin/python3
"""
Soft devices in an isolated virtual machine, the paper's model: a second
TCG guest (the soft-device VM, tests/guest/build-devvm.sh) runs the XOR
soft device, once in C (libsoftdev) and once in Python, and serves the
disk of the first guest over TCP through its user-mode network
(hostfwd): the first guest's QEMU reaches it with softdev-tap
(server.type=inet, on-disconnect=queue).  While the first guest's verify
workload runs, the whole soft-device VM is killed with SIGKILL and booted
again, more than once; the guest must see no I/O error and verify every
round, softdev-tap must have reconnected after each kill, and the image
must hold exactly the XORed data.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import io
import os
import random
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
TOP = os.path.realpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)

import guestbed  # noqa: E402

DISK_SIZE = 32 << 20
KEY = 0x5a
PORT_IN_VM = 10809

RUN = {
    'c': f'exec /opt/xor --tcp :{PORT_IN_VM} key={KEY:#x}\n',
    'python': f'PYTHONPATH=/opt exec python3 -m softdev run '
              f'softdev.examples.xor:Xor --tcp 0.0.0.0:{PORT_IN_VM} '
              f'--arg key={KEY:#x}\n',
}


def payload(path, kind, libdir):
    """The tar archive the soft-device VM unpacks into /opt."""
    with tarfile.open(path, 'w', format=tarfile.USTAR_FORMAT) as tar:
        def add_bytes(name, data, mode=0o644):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        add_bytes('run.sh', RUN[kind].encode(), 0o755)
        if kind == 'c':
            tar.add(os.path.join(libdir, 'xor'), 'xor')
        else:
            tar.add(os.path.join(TOP, 'python', 'softdev'), 'softdev',
                    filter=lambda t: None if '__pycache__' in t.name else t)
    size = os.path.getsize(path)
    with open(path, 'ab') as f:         # whole sectors for virtio-blk
        f.write(bytes(-size % 512))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class DeviceVM:
    """The soft-device VM, forwarding 127.0.0.1:port to the device."""

    def __init__(self, args, tar, port, work, n):
        self.args, self.tar, self.port, self.work = args, tar, port, work
        self.bed = None
        self.boot(n)

    def boot(self, n):
        extra = ['-netdev', f'user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}'
                            f'-:{PORT_IN_VM}',
                 '-device', 'virtio-net-pci,netdev=n0,romfile=',
                 '-blockdev', f'driver=file,node-name=p0,filename={self.tar},'
                              'read-only=on',
                 '-device', 'virtio-blk-pci,drive=p0']
        self.bed = guestbed.GuestBed(
            self.args.qemu, os.path.join(self.args.guest_dir, 'vmlinuz'),
            os.path.join(self.args.guest_dir, 'devvm-initrd.img'), '',
            extra, log_path=os.path.join(self.work, f'devvm-{n}.console'))
        self.bed.wait_for(r'SOFTDEV-DEVVM READY', 120)
        self.wait_listening()

    def wait_listening(self, timeout=60.0):
        """Until the device accepts: user-mode networking accepts on the
        host at once and closes when the guest refuses, so a connection
        that stays open is the device waiting for HELLO."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(('127.0.0.1', self.port),
                                              timeout=2) as s:
                    s.settimeout(1.0)
                    try:
                        if s.recv(1) == b'':
                            raise ConnectionResetError
                    except socket.timeout:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise guestbed.GuestError('the soft device in the VM does not listen')

    def kill(self):
        """SIGKILL: the whole VM, device and kernel, is gone at once."""
        if self.bed.proc.poll() is None:
            self.bed.proc.kill()
            self.bed.proc.wait()
        self.bed.kill()


def run_kind(args, kind, work, libdir):
    errors = []
    tar = os.path.join(work, f'{kind}.tar')
    payload(tar, kind, libdir)
    image = os.path.join(work, f'{kind}.img')
    with open(image, 'wb') as f:
        f.truncate(DISK_SIZE)
    stop = guestbed.StopDisk(os.path.join(work, f'{kind}-stop.img'))
    port = free_port()
    rng = random.Random(7)
    hits = 0
    vm = DeviceVM(args, tar, port, work, f'{kind}-0')
    try:
        disk = guestbed.tap_disk_args(
            image, 'server.type=inet,server.host=127.0.0.1,'
            f'server.port={port}', 300) + stop.args
        append = ('softdev.mode=verify softdev.dev=/dev/vda softdev.mib=1 '
                  f'softdev.slots=4 {stop.cmdline}')
        with guestbed.GuestBed(args.qemu,
                               os.path.join(args.guest_dir, 'vmlinuz'),
                               os.path.join(args.guest_dir, 'initrd.img'),
                               append, disk,
                               log_path=os.path.join(work, f'{kind}.console')
                               ) as bed:
            qmp = bed.qmp()
            bed.wait_for(r'SOFTDEV-ROUND 1 ok', 300)
            for i in range(args.kills):
                if any('SOFTDEV-RESULT' in line for line in bed.lines()):
                    errors.append(f'{kind}: the workload ended after {i} '
                                  'kills')
                    break
                # Kill while the device holds requests, if that comes
                # within 5 s (the guest also computes between its I/Os).
                time.sleep(rng.uniform(0.5, 2.0))
                deadline = time.monotonic() + 5
                while True:
                    before = guestbed.tap_info(qmp)
                    if before['outstanding'] or time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
                hits += bool(before['outstanding'])
                vm.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                vm.boot(f'{kind}-{i + 1}')
                guestbed.wait_reconnected(qmp, before['reconnects'], 120)
                bed.wait_for(r'SOFTDEV-ROUND \d+ ok', 300)
            stop.stop()
            m = bed.wait_for(r'SOFTDEV-RESULT (PASS|FAIL).*', 900)
            info = guestbed.tap_info(qmp)
            bed.wait_exit(120)
            lines = bed.lines()
    finally:
        vm.kill()
    if m.group(1) != 'PASS':
        errors.append(f'{kind}: guest: {m.group(0)}')
    errors += [f'{kind}: guest: {line}' for line in lines
               if 'SOFTDEV-IOERROR' in line or 'FAIL' in line]
    if not hits:
        errors.append(f'{kind}: no kill hit requests in flight')
    if info['reconnects'] < args.kills:
        errors.append(f'{kind}: expected {args.kills} reconnects: {info}')
    failed = sum(s['errors'] for s in info['stats'])
    if failed:
        errors.append(f'{kind}: {failed} requests failed at softdev-tap')
    regions = guestbed.parse_regions(lines)
    if not regions:
        errors.append(f'{kind}: no regions reported')
    errors += [f'{kind}: {e}' for e in guestbed.check_regions(
        image, regions, bytes(b ^ KEY for b in range(256)))]
    rounds = sum('SOFTDEV-ROUND' in line for line in lines)
    print(f'{kind}: soft-device VM killed {args.kills} times ({hits} with '
          f'requests in flight), '
          f'{info["reconnects"]} reconnects, {info["replayed"]} requests '
          f'replayed, {rounds} rounds, guest {m.group(1)}, '
          f'{len(regions)} regions checked', flush=True)
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest-dir', required=True)
    ap.add_argument('--kills', type=int, default=2)
    ap.add_argument('--kind', choices=sorted(RUN), action='append')
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix='softdev-isolated-vm-')
    libdir = os.path.join(work, 'libsoftdev')
    subprocess.run([os.path.join(TOP, 'libsoftdev', 'build.sh'), TOP, libdir],
                   check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, SANITIZE='0'))
    errors = []
    for kind in args.kind or ['c', 'python']:
        try:
            errors += run_kind(args, kind, work, libdir)
        except (guestbed.GuestError, TimeoutError) as e:
            errors.append(f'{kind}: {e}')
    print(f'logs in {work}')
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
