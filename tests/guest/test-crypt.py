#!/usr/bin/python3
"""
Guest test: softdev-crypt and the Linux kernel's dm-crypt read each
other's disks.  For 512- and 4096-byte sectors: a TCG guest writes and
verifies the softdev pattern on a virtio-blk disk served through
softdev-crypt; the image then holds no plaintext, and a second boot
reads the pattern back from the raw image through the guest kernel's
dm-crypt (aes-xts-plain64, plain mode, iv_large_sectors for 4096: what
"dmsetup create ... crypt aes-xts-plain64 KEY 0 /dev/vda 0" maps).  The
other way round, the guest writes the pattern through dm-crypt on a raw
disk and a second boot reads it back through softdev-crypt.  Then the
guest's verify workload runs on a softdev-crypt disk, and the guest makes
ext4 on one, writes files, fscks it and checks them, and a second boot
mounts and checks the same file system through dm-crypt.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import guestbed  # noqa: E402

DISK_SIZE = 64 << 20
PATTERN_MIB = 8
KEY = bytes((i * 53 + 29) % 256 for i in range(64))


def crypt_disk_args(image, keyfile, sector_size):
    """A virtio-blk disk through softdev-crypt above @image, with the
    encryption sector as its logical block size, as dm-crypt gives its
    mapping (a file system made with 1 KiB blocks on 512-byte sectors
    would not mount on a 4096-byte dm-crypt mapping)"""
    return ['-object', 'secret,id=k0,format=raw,file=%s' % keyfile,
            '-blockdev', 'driver=file,node-name=file0,filename=%s' % image,
            '-blockdev', 'driver=softdev-crypt,node-name=crypt0,file=file0,'
            'key-secret=k0,sector-size=%d' % sector_size,
            '-device', 'virtio-blk-pci,drive=crypt0,id=vd0,'
            'logical_block_size=%d,physical_block_size=%d'
            % (sector_size, sector_size)]


def boot(args, name, append, disk, work, errors):
    """One guest run; its SOFTDEV-RESULT must be PASS."""
    guestbed.boot_for_result(args, name, append, disk, work, errors,
                             ('SOFTDEV-DMCRYPT', 'SOFTDEV-FS'))


def fresh(path):
    with open(path, 'wb') as f:
        f.truncate(DISK_SIZE)


def no_plaintext(image, name, errors):
    with open(image, 'rb') as f:
        data = f.read(PATTERN_MIB << 20)
    if b'SOFTDEV PATTERN' in data:
        errors.append('%s: the image holds plaintext' % name)


def main():
    args = guestbed.image_test_args(__doc__)

    work = tempfile.mkdtemp(prefix='softdev-crypt-')
    keyfile = os.path.join(work, 'key.bin')
    with open(keyfile, 'wb') as f:
        f.write(KEY)
    pattern = 'softdev.dev=/dev/vda softdev.mib=%d' % PATTERN_MIB
    errors = []
    t0 = time.monotonic()

    for ss in (512, 4096):
        dm = 'softdev.dmcrypt=%d:%s' % (ss, KEY.hex())
        img = os.path.join(work, 'sd-%d.img' % ss)
        fresh(img)
        boot(args, 'softdev-crypt %d writes' % ss,
             'softdev.mode=pattern ' + pattern,
             crypt_disk_args(img, keyfile, ss), work, errors)
        no_plaintext(img, 'softdev-crypt %d' % ss, errors)
        boot(args, 'dm-crypt %d reads it' % ss,
             'softdev.mode=pattern-check %s %s' % (pattern, dm),
             guestbed.disk_args(img), work, errors)

        img = os.path.join(work, 'dm-%d.img' % ss)
        fresh(img)
        boot(args, 'dm-crypt %d writes' % ss,
             'softdev.mode=pattern %s %s' % (pattern, dm),
             guestbed.disk_args(img), work, errors)
        no_plaintext(img, 'dm-crypt %d' % ss, errors)
        boot(args, 'softdev-crypt %d reads it' % ss,
             'softdev.mode=pattern-check ' + pattern,
             crypt_disk_args(img, keyfile, ss), work, errors)

    img = os.path.join(work, 'verify.img')
    fresh(img)
    boot(args, 'verify workload on softdev-crypt 4096',
         'softdev.mode=verify softdev.dev=/dev/vda softdev.mib=4 '
         'softdev.rounds=4', crypt_disk_args(img, keyfile, 4096), work,
         errors)

    # A file system: the guest makes ext4 through softdev-crypt, fscks
    # it and checks its files; then dm-crypt mounts the same image
    img = os.path.join(work, 'ext4.img')
    fresh(img)
    boot(args, 'ext4 on softdev-crypt 4096',
         'softdev.mode=fs softdev.dev=/dev/vda softdev.mib=8',
         crypt_disk_args(img, keyfile, 4096), work, errors)
    with open(img, 'rb') as f:
        f.seek(1080)                # ext4's superblock magic
        if f.read(2) == b'\x53\xef':
            errors.append('ext4 on softdev-crypt: the image shows a plain '
                          'ext4 superblock')
    boot(args, 'dm-crypt 4096 mounts that ext4',
         'softdev.mode=fs-check softdev.dev=/dev/vda softdev.dmcrypt=4096:%s'
         % KEY.hex(), guestbed.disk_args(img), work, errors)

    print('test-crypt: %.0f s' % (time.monotonic() - t0))
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
