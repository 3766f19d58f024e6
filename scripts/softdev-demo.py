#!/usr/bin/python3
"""
softdev demo ('make run'): boot a Linux guest (TCG) whose virtio-blk disk
sits on a soft-device stack, show live statistics from query-softdevs
while the guest writes and verifies data, insert a tracing soft device
live above the running disk, remove it again, and summarise.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'guest'))

import guestbed  # noqa: E402
import softdev_trace  # noqa: E402

DISK_SIZE = 256 << 20


def stats_table(softdevs):
    lines = []
    for sd in softdevs:
        users = ', '.join(f'{p["kind"]} {p["name"]}' for p in sd['parents'])
        lines.append(f'  {sd["node-name"]} ({sd["driver"]} over '
                     f'{sd["child"]}, used by {users or "nobody"})')
        for st in sd['stats']:
            if not st['ops']:
                continue
            lines.append(f'    {st["op"]:<12} {st["ops"]:>7} ops '
                         f'{st["bytes"] / 2**20:>9.1f} MiB '
                         f'{st["errors"]:>3} err  p50 '
                         f'{st["p50-ns"] / 1000:>8.1f} us  p99 '
                         f'{st["p99-ns"] / 1000:>8.1f} us')
    return '\n'.join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu-build', required=True)
    ap.add_argument('--guest', required=True, help='guest kernel/initrd dir')
    ap.add_argument('--rounds', type=int, default=8)
    args = ap.parse_args()

    work = os.path.join(os.path.dirname(args.qemu_build.rstrip('/')), '..',
                        'demo')
    work = os.path.realpath(work)
    os.makedirs(work, exist_ok=True)
    image = os.path.join(work, 'disk.img')
    trace = os.path.join(work, 'live.sdtrace')
    with open(image, 'wb') as f:
        f.truncate(DISK_SIZE)

    # The boot-time stack: file <- softdev-trace (statistics only) <- raw
    disk = ['-blockdev', f'driver=file,node-name=file0,filename={image}',
            '-blockdev', 'driver=softdev-trace,node-name=stats0,file=file0',
            '-blockdev', 'driver=raw,node-name=disk0,file=stats0',
            '-device', 'virtio-blk-pci,drive=disk0,id=vd0']
    append = (f'softdev.mode=verify softdev.dev=/dev/vda '
              f'softdev.rounds={args.rounds} softdev.mib=4')
    print('softdev demo: booting a Debian guest under TCG with its disk on '
          'file0 <- stats0 (softdev-trace) <- disk0 (raw) <- vd0')
    t0 = time.monotonic()
    with guestbed.GuestBed(os.path.join(args.qemu_build,
                                        'qemu-system-x86_64'),
                           os.path.join(args.guest, 'vmlinuz'),
                           os.path.join(args.guest, 'initrd.img'),
                           append, disk,
                           log_path=os.path.join(work, 'console.log')) as bed:
        qmp = bed.qmp()
        bed.wait_for(r'SOFTDEV-ROUND 1 ', 600)
        print(f'\n[{time.monotonic() - t0:5.1f} s] guest is writing and '
              'verifying; live statistics:')
        print(stats_table(qmp.cmd('query-softdevs')))

        print(f'\n[{time.monotonic() - t0:5.1f} s] softdev-insert: '
              'softdev-trace "live0" above disk0, while the guest runs')
        qmp.cmd('softdev-insert', driver='softdev-trace',
                **{'node-name': 'live0', 'file': 'disk0',
                   'trace-file': trace, 'hash': True})
        for _ in range(2):
            m = bed.wait_for(r'SOFTDEV-ROUND (\d+) (\w+)', 600)
            print(f'\n[{time.monotonic() - t0:5.1f} s] guest round '
                  f'{m.group(1)}: {m.group(2)}')
            print(stats_table(qmp.cmd('query-softdevs')))

        print(f'\n[{time.monotonic() - t0:5.1f} s] softdev-remove live0')
        qmp.cmd('softdev-remove', **{'node-name': 'live0'})
        remaining = [sd['node-name'] for sd in qmp.cmd('query-softdevs')]
        print(f'  soft devices now: {", ".join(remaining)}')

        m = bed.wait_for(r'SOFTDEV-RESULT (PASS|FAIL).*', 900)
        final = qmp.cmd('query-softdevs')
        bed.wait_exit(120)
        regions = guestbed.parse_regions(bed.lines())

    mismatches = guestbed.check_regions(image, regions)
    with open(trace, 'rb') as f:
        _, records = softdev_trace.read_trace(f)
    print('\n=== summary ===')
    print(f'guest: {m.group(0)}')
    print(f'image: {len(regions)} regions checked, {len(mismatches)} '
          'mismatches')
    print('boot-time soft device, whole run:')
    print(stats_table(final))
    print(f'live trace {trace}: {len(records)} requests while inserted')
    for op, s in softdev_trace.summarise(records).items():
        print(f'  {op:<12} {s["ops"]:>7} ops {s["bytes"] / 2**20:>9.1f} MiB '
              f'p50 {s["p50_ns"] / 1000:.1f} us  p99 '
              f'{s["p99_ns"] / 1000:.1f} us')
    print(f'console log: {os.path.join(work, "console.log")}')
    ok = m.group(1) == 'PASS' and not mismatches and records
    print(f'demo {"succeeded" if ok else "FAILED"} in '
          f'{time.monotonic() - t0:.0f} s')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
