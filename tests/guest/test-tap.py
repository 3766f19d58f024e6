#!/usr/bin/python3
"""
Guest test through out-of-process soft devices: the guest's verify
workload runs on a virtio-blk disk whose requests go through softdev-tap
to a soft-device process, once a C one (libsoftdev passthrough) and once a
Python one (python/softdev XOR).  Passes when the guest verifies every
round and the image holds what the process should have stored.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
TOP = os.path.join(HERE, '..', '..')
sys.path.insert(0, HERE)

import guestbed  # noqa: E402

DISK_SIZE = 128 << 20
KEY = 0x5a


def run_guest(qemu, guest_dir, work, name, device_argv, key, env=None):
    image = os.path.join(work, f'{name}.img')
    sock = os.path.join(work, f'{name}.sock')
    with open(image, 'wb') as f:
        f.truncate(DISK_SIZE)
    dev = subprocess.Popen(device_argv + ['--unix', sock], env=env,
                           stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(work, f'{name}.log'),
                                       'w'))
    errors = []
    try:
        guestbed.wait_for_socket(sock, dev)
        disk = ['-blockdev', f'driver=file,node-name=file0,filename={image}',
                '-blockdev', 'driver=softdev-tap,node-name=tap0,file=file0,'
                             f'server.type=unix,server.path={sock}',
                '-blockdev', 'driver=raw,node-name=disk0,file=tap0',
                '-device', 'virtio-blk-pci,drive=disk0,id=vd0']
        append = ('softdev.mode=verify softdev.dev=/dev/vda '
                  'softdev.rounds=6 softdev.mib=4')
        with guestbed.GuestBed(qemu, os.path.join(guest_dir, 'vmlinuz'),
                               os.path.join(guest_dir, 'initrd.img'),
                               append, disk,
                               log_path=os.path.join(work,
                                                     f'{name}.console')) \
                as bed:
            m = bed.wait_for(r'SOFTDEV-RESULT (PASS|FAIL).*', 600)
            tap = bed.qmp().cmd('query-softdevs')
            bed.wait_exit(120)
            lines = bed.lines()
        if m.group(1) != 'PASS':
            errors.append(f'{name}: guest {m.group(0)}')
        writes = [s['ops'] for s in tap[0]['stats'] if s['op'] == 'write']
        if not tap[0]['connected'] or not writes[0]:
            errors.append(f'{name}: softdev-tap {tap[0]}')
        regions = guestbed.parse_regions(lines)
        if not regions:
            errors.append(f'{name}: no regions reported')
        table = bytes(b ^ key for b in range(256))
        errors += [f'{name}: {e}' for e in
                   guestbed.check_regions(image, regions, table)]
        print(f'{name}: guest {m.group(1)}, {len(regions)} regions checked, '
              f'{writes[0]} writes through the process', flush=True)
    finally:
        dev.terminate()
        dev.wait()
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest-dir', required=True)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix='softdev-tap-guest-')
    libdir = os.path.join(work, 'libsoftdev')
    subprocess.run([os.path.join(TOP, 'libsoftdev', 'build.sh'), TOP, libdir],
                   check=True, stdout=subprocess.DEVNULL)
    errors = run_guest(args.qemu, args.guest_dir, work, 'c-passthrough',
                       [os.path.join(libdir, 'passthrough')], 0)
    env = dict(os.environ, PYTHONPATH=os.path.join(TOP, 'python'))
    errors += run_guest(args.qemu, args.guest_dir, work, 'python-xor',
                        ['/usr/bin/python3', '-m', 'softdev', 'run',
                         'softdev.examples.xor:Xor', '--arg',
                         f'key={KEY:#x}'], KEY, env)
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
