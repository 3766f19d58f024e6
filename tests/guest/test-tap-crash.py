#!/usr/bin/python3
"""
Crash containment with a real guest: the guest's verify workload runs on a
virtio-blk disk served through softdev-tap (on-disconnect=queue) by the C
XOR soft device, which is killed with SIGKILL and restarted 20 times while
the guest writes and reads.  Passes when every kill hit a live connection,
the driver reconnected each time, the guest saw no I/O error and verified
every round, and the image holds exactly the XORed data.  The guest runs
rounds until the test writes STOP to a second small disk after the last
kill (softdev.stop=), so slower or faster machines change only how many
rounds run, never whether the kills land in the workload.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
TOP = os.path.join(HERE, '..', '..')
sys.path.insert(0, HERE)

import guestbed  # noqa: E402

DISK_SIZE = 256 << 20
KEY = 0x5a
KILLS = 20


def start_device(argv, sock, log):
    return subprocess.Popen(argv + ['--unix', sock],
                            stdout=subprocess.DEVNULL, stderr=log)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest-dir', required=True)
    ap.add_argument('--kills', type=int, default=KILLS)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix='softdev-tap-crash-')
    libdir = os.path.join(work, 'libsoftdev')
    subprocess.run([os.path.join(TOP, 'libsoftdev', 'build.sh'), TOP, libdir],
                   check=True, stdout=subprocess.DEVNULL)
    argv = [os.path.join(libdir, 'xor'), f'key={KEY:#x}']
    image = os.path.join(work, 'disk.img')
    sock = os.path.join(work, 'xor.sock')
    stop = guestbed.StopDisk(os.path.join(work, 'stop.img'))
    with open(image, 'wb') as f:
        f.truncate(DISK_SIZE)
    devlog = open(os.path.join(work, 'device.log'), 'w')
    dev = start_device(argv, sock, devlog)
    errors = []
    kills_with_requests = 0
    rng = random.Random(1234)
    try:
        guestbed.wait_for_socket(sock, dev)
        disk = guestbed.tap_disk_args(
            image, f'server.type=unix,server.path={sock}', 60) + stop.args
        append = ('softdev.mode=verify softdev.dev=/dev/vda '
                  f'softdev.mib=4 {stop.cmdline}')
        with guestbed.GuestBed(args.qemu,
                               os.path.join(args.guest_dir, 'vmlinuz'),
                               os.path.join(args.guest_dir, 'initrd.img'),
                               append, disk,
                               log_path=os.path.join(work, 'console')) as bed:
            qmp = bed.qmp()
            # Start killing once the guest does I/O on the disk.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                info = guestbed.tap_info(qmp)
                if sum(s['ops'] for s in info['stats']) > 50:
                    break
                time.sleep(0.05)
            for i in range(args.kills):
                if any('SOFTDEV-RESULT' in line for line in bed.lines()):
                    errors.append(f'the workload ended after {i} kills')
                    break
                # Kill while the process holds requests, if that comes
                # within 3 s (the guest also computes between its I/Os).
                time.sleep(rng.uniform(0.0, 0.1))
                deadline = time.monotonic() + 3
                while True:
                    before = guestbed.tap_info(qmp)
                    if before['outstanding'] or \
                            time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
                if before['outstanding']:
                    kills_with_requests += 1
                dev.send_signal(signal.SIGKILL)
                dev.wait()
                time.sleep(rng.uniform(0.0, 0.2))
                dev = start_device(argv, sock, devlog)
                guestbed.wait_reconnected(qmp, before['reconnects'])
            # One more round through the reconnected device, then stop.
            stop.stop()
            m = bed.wait_for(r'SOFTDEV-RESULT (PASS|FAIL).*', 900)
            info = guestbed.tap_info(qmp)
            bed.wait_exit(120)
            lines = bed.lines()
        if m.group(1) != 'PASS':
            errors.append(f'guest: {m.group(0)}')
        errors += [f'guest: {line}' for line in lines
                   if 'SOFTDEV-IOERROR' in line]
        if kills_with_requests < args.kills // 2:
            errors.append(f'only {kills_with_requests} of {args.kills} kills '
                          'hit requests in flight')
        if info['disconnects'] < args.kills or \
                info['reconnects'] < args.kills:
            errors.append(f'expected {args.kills} disconnects and '
                          f'reconnects: {info}')
        failed = sum(s['errors'] for s in info['stats'])
        if failed:
            errors.append(f'{failed} requests failed at softdev-tap')
        regions = guestbed.parse_regions(lines)
        if not regions:
            errors.append('no regions reported')
        table = bytes(b ^ KEY for b in range(256))
        errors += guestbed.check_regions(image, regions, table)
        writes = [s['ops'] for s in info['stats'] if s['op'] == 'write'][0]
        print(f'{args.kills} SIGKILLs ({kills_with_requests} with requests '
              f'outstanding), {info["reconnects"]} reconnects, '
              f'{info["replayed"]} requests replayed, {writes} writes, '
              f'guest {m.group(1)}, {len(regions)} regions checked',
              flush=True)
    finally:
        dev.terminate()
        dev.wait()
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
