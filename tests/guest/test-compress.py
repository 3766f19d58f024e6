#!/usr/bin/python3
"""
Guest test: a TCG guest's disk through softdev-compress.  The guest's
verify workload (random writes, overwrites, reads checked against what
it wrote) passes on it; the guest makes ext4 on another, writes files,
fscks it and checks them; after QEMU quits, qemu-img check finds the
image clean and compressed, and a second boot mounts the same file
system through a new softdev-compress node and checks its files again.
The verify workload's data and the files are random (they stay raw);
ext4's metadata compresses.

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


def compress_disk_args(image):
    """A virtio-blk disk through softdev-compress above @image"""
    return ['-blockdev', 'driver=file,node-name=file0,filename=%s' % image,
            '-blockdev', 'driver=softdev-compress,node-name=z0,file=file0',
            '-device', 'virtio-blk-pci,drive=z0,id=vd0']


def boot(args, name, append, disk, work, errors):
    """One guest run; its SOFTDEV-RESULT must be PASS."""
    guestbed.boot_for_result(args, name, append, disk, work, errors)


def check_image(qemu_img, image, name, errors, compressible):
    """qemu-img check is clean; with @compressible data, some of it is
    stored compressed"""
    info = guestbed.checked_image_info(qemu_img, image, 'softdev-compress',
                                       name, errors)
    if info is None:
        return
    print('%s: qemu-img check clean; %d bytes of data stored in %d '
          '(ratio %.2f, %d clusters compressed)'
          % (name, info['logical-bytes'], info['stored-bytes'],
             info['compression-ratio'], info['compressed-clusters']))
    if not info['logical-bytes'] or (compressible and
                                     not info['compressed-clusters']):
        errors.append('%s: nothing compressed: %s' % (name, info))


def main():
    args = guestbed.image_test_args(__doc__)
    qemu_img = os.path.join(os.path.dirname(args.qemu), 'qemu-img')

    work = tempfile.mkdtemp(prefix='softdev-compress-')
    errors = []
    t0 = time.monotonic()

    def fresh(name):
        img = os.path.join(work, name)
        subprocess.run([qemu_img, 'create', '-q', '-f', 'softdev-compress',
                        img, str(DISK_SIZE)], check=True)
        return img

    img = fresh('verify.img')
    boot(args, 'verify workload on softdev-compress',
         'softdev.mode=verify softdev.dev=/dev/vda softdev.mib=4 '
         'softdev.rounds=4', compress_disk_args(img), work, errors)
    check_image(qemu_img, img, 'verify workload', errors, False)

    img = fresh('ext4.img')
    boot(args, 'ext4 on softdev-compress',
         'softdev.mode=fs softdev.dev=/dev/vda softdev.mib=8',
         compress_disk_args(img), work, errors)
    check_image(qemu_img, img, 'ext4', errors, True)
    boot(args, 'ext4 on softdev-compress after a reopen',
         'softdev.mode=fs-check softdev.dev=/dev/vda',
         compress_disk_args(img), work, errors)

    print('test-compress: %.0f s' % (time.monotonic() - t0))
    if not errors:
        subprocess.run(['rm', '-rf', work])
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
