#!/usr/bin/python3
"""
Xen test of the test bed itself: processes keep their vector registers.
dom0 and two PV domUs (one vCPU each, on the bed's two CPUs) run
memcpy-check at the same time: glibc's memcpy() of 40 KiB into fresh
and reused pages, every copy checked.  Every copy must be right.

Under QEMU's TCG, Xen's lazy FPU switching (CR0.TS and #NM) let a
process's vector register stores run with another vCPU's registers:
without spec-ctrl=eager-fpu on Xen's command line (xenbed.XEN_APPEND),
6 % of dom0's copies and 0.02 % of the domUs' had their first 16-64
bytes wrong (docs/xen.rst, The test bed).  Every Xen test checks data,
so the bed must not corrupt it on its own.

Usage: test-xen-bed-fpu.py --qemu QEMU --bed-dir OUTDIR [--seconds N]

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import xenbed  # noqa: E402
import guestbed  # noqa: E402

SECOND = 'xenbed-fpu2'
MIN_COPIES = 500        # per domain: the check really ran

DOM0_SCRIPT = r'''
xenbed_pre() {
    chmod 755 /job/memcpy-check
    truncate -s 1M /tmp/%(second)s.img
    xl create /job/second.cfg >/tmp/xl-second.log 2>&1
    rc=$?
    dump /tmp/xl-second.log xl-second
    [ $rc -eq 0 ] || return 1
    { follow_console /var/log/xen/console/guest-%(second)s.log second & }
    # dom0's own check, once the domUs are busy
    { sleep 5; /job/memcpy-check %(secs)d | sed 's/^/[dom0] /'; } &
    DOM0_CHECK=$!
}
xenbed_post() {
    wait $DOM0_CHECK
    i=0
    while ! grep -q MEMCPY-CHECK /var/log/xen/console/guest-%(second)s.log \
            2>/dev/null && [ $i -lt 120 ]; do
        sleep 1; i=$((i + 1))
    done
    sleep 1
    xl destroy %(second)s >/dev/null 2>&1
    :
}
'''

DOMU_SCRIPT = r'''
chmod 755 /job/memcpy-check
/job/memcpy-check %(secs)d
echo "XENBED-FPU-DONE"
'''


def build_checker(work):
    out = os.path.join(work, 'memcpy-check')
    subprocess.run([os.environ.get('CC', 'gcc'), '-std=gnu11', '-O2',
                    '-static', os.path.join(HERE, 'memcpy-check.c'),
                    '-o', out], check=True)
    with open(out, 'rb') as f:
        return f.read()


def main():
    ap = xenbed.test_arg_parser(__doc__, timeout=600, print_config=False)
    ap.add_argument('--seconds', type=int, default=45,
                    help='how long each domain copies (default 45)')
    a = xenbed.parse_test_args(ap)
    work = tempfile.mkdtemp(prefix='xenbed-fpu-')
    checker = build_checker(work)
    subst = {'second': SECOND, 'secs': a.seconds}
    second_cfg = xenbed.domain_config(
        name=SECOND, memory=128, qmp=False,
        disks=[xenbed.qdisk('/tmp/%s.img' % SECOND)])
    errors = []
    t0 = time.monotonic()
    with xenbed.XenBed(a.qemu, a.bed_dir, DOMU_SCRIPT % subst,
                       xenbed.domain_config(), dom0_script=DOM0_SCRIPT % subst,
                       dom0_files={'/job/second.cfg': second_cfg,
                                   '/job/memcpy-check': checker},
                       domu_files={'/job/memcpy-check': checker},
                       dm_qmp=False, echo=a.verbose,
                       log_path=os.path.join(work, 'console.log'),
                       domu_timeout=a.seconds + 240) as bed:
        try:
            rc = bed.run(a.timeout)
            if rc not in (0, 1):
                errors.append('dom0 job exit status %d' % rc)
            bed.wait_exit(60)
        except (TimeoutError, guestbed.GuestError) as e:
            errors.append('%s: %s' % (type(e).__name__, e))
        lines = bed.lines()
    results = {}
    for t in lines:
        m = re.match(r'^\[(dom0|domU|second)\] (MEMCPY-(CHECK|BAD) .*)', t)
        if not m:
            continue
        if m.group(3) == 'BAD':
            errors.append('%s: %s' % (m.group(1), m.group(2)))
            continue
        c = re.search(r'copies=(\d+) bad=(\d+)', m.group(2))
        results[m.group(1)] = (int(c.group(1)), int(c.group(2)))
    for dom in ('dom0', 'domU', 'second'):
        copies, bad = results.get(dom, (0, 0))
        if dom not in results:
            errors.append('%s did not finish its check' % dom)
        elif bad:
            errors.append('%s: %d of %d copies were bad' % (dom, bad, copies))
        elif copies < MIN_COPIES:
            errors.append('%s: only %d copies' % (dom, copies))
    print('test-xen-bed-fpu: %s; %.0f s' % (
        ', '.join('%s %d copies %d bad' % (d, *results[d])
                  for d in sorted(results)), time.monotonic() - t0))
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
