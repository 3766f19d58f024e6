#!/usr/bin/python3
"""
Xen test: under QEMU/TCG, Xen 4.17's dom0 `xl create`s a PV domU whose disk
xvda is a qdisk served by our QEMU (device_model_override) on top of dom0's
/dev/vda, a raw image on the host.  The domU writes the softdev pattern to
several regions over a few rounds (fsync'd buffered writes), drops its
caches and re-reads everything with O_DIRECT after each round.  While it
does I/O, the host connects to the device model's QMP through the outer
QEMU's hostfwd and lists its block nodes.  Passes when the domU saw no
error and the image holds exactly the pattern where written and zeros
elsewhere.

Usage: test-xen-disk.py --qemu QEMU --bed-dir OUTDIR_OF_build-xen-bed.sh

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import xenbed  # noqa: E402


def main():
    ap = xenbed.test_arg_parser(__doc__, timeout=230, print_config=False)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--workdir', help='keep the image and console log here')
    a = xenbed.parse_test_args(ap)
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    t0 = time.monotonic()
    errors, info = xenbed.run_disk_test(a.qemu, a.bed_dir, rounds=a.rounds,
                                        workdir=a.workdir, echo=a.verbose,
                                        timeout=a.timeout)
    for e in errors:
        print('ERROR: ' + e)
    if errors:
        for t in info.get('dm_log', []):
            print('test-xen-disk: device model: ' + t)
        print('test-xen-disk: console log %s' % info['log'])
    print('test-xen-disk: %s regions=%d nodes=%s total=%.1fs pack=%ss '
          'qmp-connect=%ss timings=%s'
          % ('PASS' if not errors else 'FAIL', info.get('regions', 0),
             ','.join(info.get('nodes', [])), time.monotonic() - t0,
             info.get('pack_s'), info.get('qmp_connect_s'),
             info.get('timings')))
    return 0 if not errors else 1


if __name__ == '__main__':
    sys.exit(main())
