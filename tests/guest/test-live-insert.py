#!/usr/bin/python3
"""
Guest test: a Linux guest (TCG) writes, syncs and verifies patterned data
on a virtio-blk disk while the host inserts softdev-trace above the disk's
root node and removes it again over QMP, several times, in the middle of
the guest's I/O.  Passes when the guest saw no I/O error, every checksum
matched (in the guest and in the image file), and every trace recorded
the guest's requests.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))

import guestbed  # noqa: E402
import softdev_trace  # noqa: E402

DISK_SIZE = 256 << 20


def check_trace(path, errors):
    """Per-op counts of a trace; the closing flush of the node (always the
    last record) is counted apart as 'close-flush'."""
    with open(path, 'rb') as f:
        header, records = softdev_trace.read_trace(f)
    ops = {}
    if records and records[-1].op == 'flush':
        ops['close-flush'] = 1
        records = records[:-1]
    for r in records:
        ops[r.op] = ops.get(r.op, 0) + 1
        if r.op != 'flush' and r.offset + r.length > DISK_SIZE:
            errors.append(f'{path}: {r.op} beyond the disk: {r}')
        if r.result != 0:
            errors.append(f'{path}: failed request {r}')
    if not ops.get('write') and not ops.get('read'):
        errors.append(f'{path}: no guest request recorded: {ops}')
    return ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest-dir', required=True)
    ap.add_argument('--cycles', type=int, default=6,
                    help='insert/remove cycles (default 6)')
    ap.add_argument('--timeout', type=float, default=900)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix='softdev-guest-')
    image = os.path.join(work, 'disk.img')
    with open(image, 'wb') as f:
        f.truncate(DISK_SIZE)
    # Rounds until the cycles are done (then one more), however fast the
    # machine: the guest stops when told (softdev.stop=)
    stop = guestbed.StopDisk(os.path.join(work, 'stop.img'))
    append = (f'softdev.mode=verify softdev.dev=/dev/vda '
              f'softdev.mib=4 {stop.cmdline}')
    errors = []
    traces = []
    rng = random.Random(1)
    t0 = time.monotonic()

    with guestbed.GuestBed(args.qemu,
                           os.path.join(args.guest_dir, 'vmlinuz'),
                           os.path.join(args.guest_dir, 'initrd.img'),
                           append, guestbed.disk_args(image) + stop.args,
                           log_path=os.path.join(work, 'console.log')) as bed:
        qmp = bed.qmp()
        bed.wait_for(r'SOFTDEV-ROUND 1 ', args.timeout)
        for cycle in range(args.cycles):
            trace = os.path.join(work, f'trace-{cycle}.sdtrace')
            # Land in the middle of a round's I/O, not at its edges.
            time.sleep(rng.uniform(0.2, 1.5))
            qmp.cmd('softdev-insert', driver='softdev-trace',
                    **{'node-name': 'sd0', 'file': 'disk0',
                       'trace-file': trace, 'hash': cycle % 2 == 1})
            bed.wait_for(r'SOFTDEV-ROUND \d+ ', args.timeout)
            time.sleep(rng.uniform(0.2, 1.5))
            info = qmp.cmd('query-softdevs')
            if len(info) != 1 or info[0]['child'] != 'disk0' or \
                    [p['name'] for p in info[0]['parents']] != ['disk0']:
                errors.append(f'cycle {cycle}: query-softdevs {info}')
            qmp.cmd('softdev-remove', **{'node-name': 'sd0'})
            if qmp.cmd('query-softdevs'):
                errors.append(f'cycle {cycle}: soft device still listed')
            ops = check_trace(trace, errors)
            traces.append(ops)
            print(f'cycle {cycle}: inserted and removed live, trace {ops}',
                  flush=True)
            bed.wait_for(r'SOFTDEV-ROUND \d+ ', args.timeout)
        stop.stop()
        m = bed.wait_for(r'SOFTDEV-RESULT (PASS|FAIL).*', args.timeout)
        if m.group(1) != 'PASS':
            errors.append('guest: ' + m.group(0))
        bed.wait_exit(120)
        lines = bed.lines()
        for line in lines:
            if 'FAIL' in line or 'SOFTDEV-IOERROR' in line:
                errors.append('guest: ' + line)
        regions = guestbed.parse_regions(lines)
    if not regions:
        errors.append('guest reported no regions')
    errors += guestbed.check_regions(image, regions)
    for op in ('read', 'write', 'flush'):
        if not any(t.get(op) for t in traces):
            errors.append(f'no trace recorded a guest {op}')

    print(f'{args.cycles} live insert/remove cycles, {len(regions)} regions '
          f'checked in the image, {time.monotonic() - t0:.0f} s')
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
