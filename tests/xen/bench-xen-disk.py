#!/usr/bin/python3
"""
Benchmark of a PV guest's disk with a passthrough soft device: in one boot
of the Xen test bed (xenbed.py: Xen 4.17 and a Debian dom0 under
QEMU/TCG), a PV domU has three qdisk disks of the same size, files in
dom0's memory, served by our QEMU as device model:

  xvda  no soft device: the reference
  xvdb  softdev-trace without a trace file, in the device model
  xvdc  softdev-tap (default options), served by libsoftdev's C
        passthrough example (default options) running in dom0

The domU (xen-blkfront) first writes each disk once (unmeasured: dom0
allocates the files' memory), then, for a number of rounds, writes each
disk with `dd bs=1M oflag=direct conv=fsync` and then reads each with
`dd bs=1M iflag=direct` after dropping its caches, the disks in turns
whose order rotates every round.  Times are taken in the domU around each
dd (microseconds, from adjtimex).  Reported per disk: the median MB/s
(10^6 bytes/s) of the rounds, and as ratio the median of the per-round
ratios disk / xvda (a disk with a soft device against the bare disk in
the same round, so drift cancels), with their min-max.  Target: >= 0.95 of
the bare disk for each soft device, reads and writes; a MISS is printed,
not an error.  At the end the domU checks that each disk reads back what
it wrote, and the host checks with query-softdevs that the soft devices
saw the I/O.  Everything runs under TCG, so absolute MB/s say little;
the ratios say what a soft device costs next to the rest of the path.

Usage: bench-xen-disk.py --qemu QEMU --bed-dir OUTDIR_OF_build-xen-bed.sh
                         [--rounds N] [--mib N] [--json FILE]
       bench-xen-disk.py --print-config

SPDX-License-Identifier: GPL-2.0-or-later
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import xenbed  # noqa: E402
from xenbed import MIB  # noqa: E402

TARGET = 0.95
BARE = 'xvda'
TAP_SOCK = '/run/softdev/xvdc.sock'
HOLD_S = 15         # the domU waits this long for the host's final look
# (vdev, what is above the disk's node, its soft device's node name)
DISKS = [
    ('xvda', 'none', None),
    ('xvdb', 'softdev-trace (in the device model)', 'xvdb-softdev0'),
    ('xvdc', 'softdev-tap + C passthrough in dom0', 'xvdc-softdev0'),
]
OBJECTS = [
    {'qom-type': 'softdev-xen-disk', 'id': 'sd-xvdb', 'vdev': 'xvdb',
     'chain': [{'driver': 'softdev-trace'}]},
    {'qom-type': 'softdev-xen-disk', 'id': 'sd-xvdc', 'vdev': 'xvdc',
     'chain': [{'driver': 'softdev-tap',
                'server': {'type': 'unix', 'path': TAP_SOCK}}]},
]
DRIVERS = {'xvdb-softdev0': 'softdev-trace', 'xvdc-softdev0': 'softdev-tap'}

# dom0: the three files, and xvdc's soft-device process (the device model
# connects to it when the disk appears).
DOM0_SCRIPT = r'''
xenbed_pre() {
    for d in %(disks)s; do
        truncate -s %(mib)dM /tmp/$d.img || return 1
    done
    mkdir -p /run/softdev && chmod 755 /job/softdev-passthrough || return 1
    # What a wake-up of another process costs here, next to a thread's
    chmod 755 /job/switch-cost && /job/switch-cost 2000 | sed 's/^/XENBED-/'
    /job/softdev-passthrough --unix %(sock)s >/tmp/passthrough.log 2>&1 &
    i=0
    while [ ! -S %(sock)s ] && [ $i -lt 100 ]; do
        usleep 100000; i=$((i + 1))
    done
    [ -S %(sock)s ] || { cat /tmp/passthrough.log; return 1; }
}
# The soft-device process's CPU time over the whole run (clock ticks)
xenbed_post() {
    pid=$(pidof softdev-passthrough) || return 0
    set -- $(cat /proc/$pid/stat)
    echo "XENBED-BENCH-CPU passthrough utime=${14} stime=${15}" \
         "hz=$(getconf CLK_TCK 2>/dev/null || echo 100)"
}
'''

DOMU_SCRIPT = r'''
DISKS="%(disks)s"
MIB=%(mib)d ROUNDS=%(rounds)d HOLD=%(hold)d
ERR=0
fail() { echo "XENBED-ERROR $*"; ERR=$((ERR + 1)); }
for d in $DISKS; do
    i=0
    while [ ! -b /dev/$d ] && [ $i -lt 100 ]; do
        usleep 100000; i=$((i + 1))
    done
    [ -b /dev/$d ] || { echo "XENBED-RESULT FAIL no /dev/$d"; exit 1; }
done
now_us() {
    adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 }
                    END { printf "%%d%%06d\n", s, u }'
}
# rotated R: the disks, the first R mod 3 moved to the end
rotated() {
    r=$1
    set -- $DISKS
    k=$((r %% $#))
    while [ $k -gt 0 ]; do x=$1; shift; set -- "$@" "$x"; k=$((k - 1)); done
    echo "$@"
}
# run ROUND OP DISK: one timed dd, its time on the console
run() {
    if [ $2 = write ]; then
        set -- "$1" "$2" "$3" if=/tmp/data of=/dev/$3 oflag=direct conv=fsync
    else
        sync
        echo 3 >/proc/sys/vm/drop_caches
        set -- "$1" "$2" "$3" if=/dev/$3 of=/dev/null iflag=direct
    fi
    t0=$(now_us)
    dd bs=1M count=$MIB "$4" "$5" "$6" ${7:+"$7"} 2>/tmp/dd.err ||
        { fail "$2 $3: $(head -n 1 /tmp/dd.err)"; return; }
    t1=$(now_us)
    echo "XENBED-BENCH $1 $2 $3 $((t1 - t0))"
}
yes 'softdev xen disk benchmark' | head -c $((MIB * 1048576)) >/tmp/data
for d in $DISKS; do
    dd if=/tmp/data of=/dev/$d bs=1M count=$MIB oflag=direct conv=fsync \
        status=none || fail "warm-up write of $d"
done
echo "XENBED-BENCH-START uptime=$(cut -d' ' -f1 /proc/uptime)"
r=0
while [ $r -lt $ROUNDS ]; do
    for op in write read; do
        for d in $(rotated $r); do
            run $r $op $d
        done
    done
    r=$((r + 1))
done
want=$(md5sum </tmp/data | cut -d' ' -f1)
for d in $DISKS; do
    got=$(dd if=/dev/$d bs=1M count=$MIB iflag=direct status=none |
          md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "$d reads back $got, wrote $want"
done
echo "XENBED-BENCH-DONE errors=$ERR"
# The host looks at the device model now (it is gone once we end).
sleep $HOLD
[ $ERR -eq 0 ] || exit 1
exit 0
'''


def xl_config(mib):
    """The domain config: three qdisk disks on files in dom0's /tmp."""
    disks = ['format=raw, vdev=%s, access=rw, backendtype=qdisk, '
             'target=/tmp/%s.img' % (d, d) for d, _, _ in DISKS]
    args = []
    for o in OBJECTS:
        args += ['-object', json.dumps(o)]
    # room for the domU's copy of the data in its tmpfs
    return xenbed.domain_config(memory=max(256, 192 + mib), disks=disks,
                                dm_args=args)


def parse_runs(domu):
    """{(op, disk): {round: MB/s}} from the domU's XENBED-BENCH lines."""
    runs = {}
    for t in domu:
        m = re.match(r'^XENBED-BENCH (\d+) (write|read) (\S+) (\d+)$', t)
        if m:
            r, op, disk, us = int(m[1]), m[2], m[3], int(m[4])
            runs.setdefault((op, disk), {})[r] = us
    return runs


def report(runs, mib, rounds):
    """Print the table; return {op: {disk: {...}}} for the JSON file."""
    nbytes = mib * MIB
    out = {}
    print()
    print('bench-xen-disk: PV domU, xen-blkfront -> qdisk (QEMU in dom0), '
          'files in dom0\'s memory;')
    print('  dd bs=1M count=%d (%d MiB) O_DIRECT, writes with fsync, reads '
          'after drop_caches; %d rounds' % (mib, mib, rounds))
    print('  MB/s: 10^6 bytes/s, median of the rounds; ratio: median of the '
          'per-round ratios vs %s' % BARE)
    print('  (no soft device), same boot and round, with their min-max; '
          'target >= %.2f' % TARGET)
    for op in ('write', 'read'):
        out[op] = {}
        base = {r: nbytes / us for r, us in runs.get((op, BARE), {}).items()}
        print()
        print('  %-5s %-5s %-37s %8s %7s %13s  %s'
              % (op, 'disk', 'soft device', 'MB/s', 'ratio', 'min-max',
                 'verdict'))
        for disk, what, _ in DISKS:
            mbs = {r: nbytes / us
                   for r, us in runs.get((op, disk), {}).items()}
            if not mbs:
                print('  %-5s %-5s %-37s %8s' % ('', disk, what, 'no runs'))
                continue
            entry = {'soft_device': what,
                     'mb_per_s': round(statistics.median(mbs.values()), 2),
                     'runs': [round(mbs[r], 2) for r in sorted(mbs)]}
            ratio_txt, mm_txt, verdict = '', '', ''
            ratios = [mbs[r] / base[r] for r in sorted(mbs) if r in base]
            if disk != BARE and ratios:
                ratio = statistics.median(ratios)
                ok = ratio >= TARGET
                entry.update(ratio=round(ratio, 4),
                             ratio_runs=[round(x, 4) for x in ratios],
                             min_ratio=TARGET,
                             verdict='PASS' if ok else 'MISS')
                ratio_txt = '%.3f' % ratio
                mm_txt = '%.3f-%.3f' % (min(ratios), max(ratios))
                verdict = ('PASS (>= %.2f)' if ok
                           else 'MISS (< %.2f)') % TARGET
            print('  %-5s %-5s %-37s %8.1f %7s %13s  %s'
                  % ('', disk, what, entry['mb_per_s'], ratio_txt, mm_txt,
                     verdict))
            out[op][disk] = entry
    return out


def check_softdevs(qmp, mib, rounds, errors, latency):
    """The soft devices are there and saw every write and read.  Fills
    latency with each one's request count and latency per operation (as
    query-softdevs has them: from the request's arrival at the soft
    device to its completion), and the tap's KICKs."""
    entries = {e['node-name']: e for e in qmp.cmd('query-softdevs')}
    seen = {}
    for name, driver in DRIVERS.items():
        e = entries.get(name)
        if not e or e['driver'] != driver:
            errors.append('%s: not in query-softdevs as %s' % (name, driver))
            continue
        b = {st['op']: st['bytes'] for st in e['stats']
             if st['op'] in ('read', 'write')}
        seen[name] = b
        latency[name] = {
            st['op']: {'ops': st['ops'],
                       'mean_us': round(st['total-ns'] / st['ops'] / 1e3, 1),
                       'p50_us': round(st['p50-ns'] / 1e3, 1),
                       'p99_us': round(st['p99-ns'] / 1e3, 1)}
            for st in e['stats']
            if st['op'] in ('read', 'write', 'flush') and st['ops']}
        if 'kicks-sent' in e:
            latency[name]['kicks'] = {'sent': e['kicks-sent'],
                                      'received': e['kicks-received']}
        if b.get('write', 0) < (rounds + 1) * mib * MIB or \
                b.get('read', 0) < rounds * mib * MIB:
            errors.append('%s saw %s bytes, the domU moved more'
                          % (name, b))
    return seen


def main():
    ap = xenbed.test_arg_parser(__doc__, timeout=1200)
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--mib', type=int, default=64,
                    help='MiB per dd, and the size of each disk')
    ap.add_argument('--json', help='write the results here')
    ap.add_argument('--workdir', help='keep the console log here')
    a = xenbed.parse_test_args(ap)
    if not 1 <= a.rounds <= 100 or not 8 <= a.mib <= 256:
        ap.error('--rounds must be 1-100 and --mib 8-256')
    if a.print_config:
        sys.stdout.write(xl_config(a.mib))
        return 0
    work = a.workdir or tempfile.mkdtemp(prefix='xenbed-bench-')
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, 'console.log')
    passthrough = xenbed.libsoftdev_example('passthrough', work)
    switch_cost = os.path.join(work, 'switch-cost')
    subprocess.run(['cc', '-O2', '-pthread', '-o', switch_cost,
                    os.path.join(HERE, 'switch-cost.c')], check=True)
    with open(switch_cost, 'rb') as f:
        switch_cost = f.read()
    names = ' '.join(d for d, _, _ in DISKS)
    dom0 = DOM0_SCRIPT % {'disks': names, 'mib': a.mib, 'sock': TAP_SOCK}
    domu = DOMU_SCRIPT % {'disks': names, 'mib': a.mib, 'rounds': a.rounds,
                          'hold': HOLD_S}
    errors, seen, latency = [], {}, {}
    t0 = time.monotonic()
    with xenbed.XenBed(a.qemu, a.bed_dir, domu, xl_config(a.mib),
                       dom0_script=dom0,
                       dom0_files={'/job/softdev-passthrough': passthrough,
                                   '/job/switch-cost': switch_cost},
                       echo=a.verbose, log_path=log,
                       domu_timeout=int(a.timeout)) as bed:
        bed.finish('XENBED-BENCH-DONE',
                   lambda qmp: seen.update(check_softdevs(
                       qmp, a.mib, a.rounds, errors, latency)),
                   a.timeout, errors, 'the domU did not finish its runs',
                   job_ok=(0,))
        lines = bed.domu_lines()
        timings = bed.timings()
        cpu = [t for t in bed.lines() if 'XENBED-BENCH-CPU' in t]
        switch = [t for t in bed.lines() if 'XENBED-SWITCH-COST' in t]
    errors += ['domU: ' + t for t in lines if t.startswith('XENBED-ERROR')]
    runs = parse_runs(lines)
    results = report(runs, a.mib, a.rounds)
    if len(runs) != 2 * len(DISKS) or \
            any(len(v) != a.rounds for v in runs.values()):
        errors.append('expected %d runs per disk and operation, got %s'
                      % (a.rounds, {'%s %s' % k: len(v)
                                    for k, v in runs.items()}))
    total = time.monotonic() - t0
    print()
    print('bench-xen-disk: soft devices saw (bytes): %s' % seen)
    for name, lat in latency.items():
        print('bench-xen-disk: %s requests and latency (us): %s'
              % (name, lat))
    m = re.search(r'process_us=([\d.]+) thread_us=([\d.]+)',
                  ''.join(switch[-1:]))
    if m:
        latency['dom0-round-trip-us'] = {'process': float(m.group(1)),
                                         'thread': float(m.group(2))}
        print('bench-xen-disk: in dom0, a round trip to another process '
              'takes %s us, to another thread %s us' % m.groups())
    m = re.search(r'utime=(\d+) stime=(\d+) hz=(\d+)', ''.join(cpu[-1:]))
    if m and latency.get('xvdc-softdev0'):
        ops = sum(v['ops'] for k, v in latency['xvdc-softdev0'].items()
                  if k != 'kicks')
        secs = (int(m.group(1)) + int(m.group(2))) / int(m.group(3))
        latency['xvdc-process-cpu'] = {
            'seconds': secs, 'us_per_request': round(secs * 1e6 / ops, 1)}
        print('bench-xen-disk: the passthrough process used %.2f s of CPU '
              '(%.0f us per request)' % (secs, secs * 1e6 / ops))
    print('bench-xen-disk: %s in %.0f s, timings %s'
          % ('done' if not errors else 'FAILED', total, timings))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, 'w') as f:
            json.dump({'date': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                       'mib': a.mib, 'rounds': a.rounds,
                       'target': TARGET, 'results': results,
                       'softdev_bytes': seen, 'softdev_latency': latency,
                       'errors': errors,
                       'seconds': round(total)}, f, indent=2)
            f.write('\n')
    for e in errors:
        print('ERROR: ' + e)
    if errors:
        print('bench-xen-disk: console log %s' % log)
    elif not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
