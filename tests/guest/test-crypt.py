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
disk and a second boot reads it back through softdev-crypt.  Last, the
guest's verify workload runs on a softdev-crypt disk.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
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
    """A virtio-blk disk through softdev-crypt above @image"""
    return ['-object', 'secret,id=k0,format=raw,file=%s' % keyfile,
            '-blockdev', 'driver=file,node-name=file0,filename=%s' % image,
            '-blockdev', 'driver=softdev-crypt,node-name=crypt0,file=file0,'
            'key-secret=k0,sector-size=%d' % sector_size,
            '-device', 'virtio-blk-pci,drive=crypt0,id=vd0']


def boot(args, name, append, disk, work, errors):
    """One guest run; its SOFTDEV-RESULT must be PASS."""
    log = os.path.join(work, name + '.log')
    with guestbed.GuestBed(args.qemu,
                           os.path.join(args.guest_dir, 'vmlinuz'),
                           os.path.join(args.guest_dir, 'initrd.img'),
                           append, disk, log_path=log) as bed:
        try:
            m = bed.wait_for(r'SOFTDEV-RESULT (\S+)', args.timeout)
            bed.wait_exit(60)
        except (TimeoutError, guestbed.GuestError) as e:
            errors.append('%s: %s (%s)' % (name, e, log))
            return
        lines = bed.lines()
    if m.group(1) != 'PASS':
        bad = [t for t in lines if 'MISMATCH' in t or 'RESULT' in t or
               'IOERROR' in t or 'FAIL' in t]
        errors.append('%s: %s' % (name, '; '.join(bad[:4])))
    else:
        mapped = [t for t in lines if t.startswith('SOFTDEV-DMCRYPT')]
        print('%s: PASS %s' % (name, mapped[0] if mapped else ''))


def fresh(path):
    with open(path, 'wb') as f:
        f.truncate(DISK_SIZE)


def no_plaintext(image, name, errors):
    with open(image, 'rb') as f:
        data = f.read(PATTERN_MIB << 20)
    if b'SOFTDEV PATTERN' in data:
        errors.append('%s: the image holds plaintext' % name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest-dir', required=True)
    ap.add_argument('--timeout', type=float, default=300)
    args = ap.parse_args()

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

    print('test-crypt: %.0f s' % (time.monotonic() - t0))
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
