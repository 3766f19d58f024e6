#!/usr/bin/python3
"""
Guest test: a TCG guest's disk through softdev-cas.  The guest's verify
workload (random writes, overwrites, reads checked against what it
wrote) passes on it; the guest makes ext4 on another with 4 KiB chunks,
writes random files and a copy of each, fscks it and checks them; after
QEMU quits, qemu-img check finds the image clean and the copies stored
once, and a second boot mounts the same file system through a new
softdev-cas node, with verify=on, and checks its files again.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import guestbed  # noqa: E402

DISK_SIZE = 64 << 20
FILES_MIB = 8


def cas_disk_args(image, verify=False):
    """A virtio-blk disk through softdev-cas above @image"""
    return ['-blockdev', 'driver=file,node-name=file0,filename=%s' % image,
            '-blockdev', 'driver=softdev-cas,node-name=c0,file=file0,'
            'verify=%s' % ('on' if verify else 'off'),
            '-device', 'virtio-blk-pci,drive=c0,id=vd0']


def check_image(qemu_img, image, name, errors, copied=0):
    """qemu-img check is clean; with @copied bytes of copies written, at
    least that much less is stored than the guest wrote"""
    info = guestbed.checked_image_info(qemu_img, image, 'softdev-cas', name,
                                       errors)
    if info is None:
        return
    unique = info['unique-chunks'] * info['chunk-size']
    print('%s: qemu-img check clean; %d bytes of data in %d unique chunks '
          '(%d bytes, dedup ratio %.2f)'
          % (name, info['logical-bytes'], info['unique-chunks'], unique,
             info['dedup-ratio']))
    if not info['logical-bytes'] or \
            info['logical-bytes'] - unique < copied * 0.95:
        errors.append('%s: the copies were not deduplicated: %s'
                      % (name, info))


def main():
    args = guestbed.image_test_args(__doc__)
    qemu_img = os.path.join(os.path.dirname(args.qemu), 'qemu-img')

    work = tempfile.mkdtemp(prefix='softdev-cas-')
    errors = []
    t0 = time.monotonic()

    def fresh(name, *opts):
        img = os.path.join(work, name)
        subprocess.run([qemu_img, 'create', '-q', '-f', 'softdev-cas',
                        *opts, img, str(DISK_SIZE)], check=True)
        return img

    img = fresh('verify.img')
    guestbed.boot_for_result(
        args, 'verify workload on softdev-cas',
        'softdev.mode=verify softdev.dev=/dev/vda softdev.mib=4 '
        'softdev.rounds=4', cas_disk_args(img), work, errors)
    check_image(qemu_img, img, 'verify workload', errors)

    img = fresh('ext4.img', '-o', 'chunk-size=4k')
    guestbed.boot_for_result(
        args, 'ext4 on softdev-cas',
        'softdev.mode=fs softdev.dev=/dev/vda softdev.mib=%d '
        'softdev.copies=1' % FILES_MIB, cas_disk_args(img), work, errors)
    check_image(qemu_img, img, 'ext4', errors, copied=FILES_MIB << 20)
    guestbed.boot_for_result(
        args, 'ext4 on softdev-cas after a reopen, verify=on',
        'softdev.mode=fs-check softdev.dev=/dev/vda',
        cas_disk_args(img, verify=True), work, errors)

    print('test-cas: %.0f s' % (time.monotonic() - t0))
    if not errors:
        subprocess.run(['rm', '-rf', work])
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
