#!/usr/bin/python3
"""
bench-timetravel.py --qemu-build DIR: softdev-timetravel against the bare
stack in the same run, as a user runs it (default options, no CPU
pinning), with 'qemu-img bench' (io_uring, cache=writeback) on a
page-cached 1 GiB disk of random data on tmpfs:

- bare: json:{"driver":"file",...} on the disk;
- timetravel: softdev-timetravel on the same disk, its journal a new
  sparse file on tmpfs ('qemu-img create -f raw', what a user makes)
  large enough for every run's history (retention does not run), every
  block of the disk already saved once (its base copy), so the runs see
  the steady state of a disk that has been written before;
- timetravel-prealloc (a tuned set-up, reported beside): the same with a
  journal made with 'qemu-img create -o preallocation=full', so that the
  journal's writes overwrite pages that exist instead of allocating new
  ones.

Workloads as bench/run-bench.sh's: rand-write and rand-read (4 KiB, queue
depth 32, golden-ratio step), seq-write and seq-read (1 MiB, queue depth
8).  Each repetition runs bare and timetravel back to back in
alternating order, then timetravel-prealloc; ratios are medians of the
per-repetition ratios against bare.  Targets
(issue 21): writes through softdev-timetravel >= 0.77x bare, reads of
the present >= 0.97x bare.

View reads: qemu-storage-daemon serves, over NBD on a unix socket, a
softdev-timetravel-view at a mark taken after half the disk was
rewritten, and the disk itself; 'qemu-img bench' reads both (1 MiB, depth
8): the view's throughput and its ratio to the bare export.

A missed target prints MISS but does not fail; results go to
build/bench/timetravel.json.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
MIB = 1 << 20
IMG_MIB = 1024


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True,
                          **kw).stdout


def bench(qemu_img, spec, write, size, depth, step, count):
    """Seconds 'qemu-img bench' reports"""
    cmd = [qemu_img, 'bench', '-t', 'writeback', '-i', 'io_uring', '-c',
           str(count), '-d', str(depth), '-s', str(size), '-S', str(step),
           '--pattern=165'] + (['-w'] if write else []) + [spec]
    out = run(cmd)
    return float(re.search(r'Run completed in ([0-9.]+) seconds', out)[1])


def spec_tt(disk, journal, **opts):
    d = {'driver': 'softdev-timetravel',
         'file': {'driver': 'file', 'filename': disk},
         'journal': {'driver': 'file', 'filename': journal}}
    d.update(opts)
    return 'json:' + json.dumps(d)


class Qsd:
    """qemu-storage-daemon with a QMP socket"""

    def __init__(self, build, tmp, args):
        self.qmp_path = os.path.join(tmp, 'qmp.sock')
        self.p = subprocess.Popen(
            [os.path.join(build, 'storage-daemon', 'qemu-storage-daemon'),
             '--chardev', f'socket,id=m,path={self.qmp_path},server=on,'
             'wait=off', '--monitor', 'm'] + args,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            if os.path.exists(self.qmp_path):
                break
            time.sleep(0.05)
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(self.qmp_path)
        self.f = self.s.makefile('rw')
        self.f.readline()
        self.cmd('qmp_capabilities')

    def cmd(self, command, **args):
        self.f.write(json.dumps({"execute": command, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'return' in r:
                return r['return']
            if 'error' in r:
                raise RuntimeError(f"{command}: {r['error']['desc']}")

    def close(self):
        self.cmd('quit')
        self.p.wait(timeout=30)


def main():
    tmp = tempfile.mkdtemp(prefix='bench-tt-', dir='/dev/shm'
                           if os.path.isdir('/dev/shm') else None)
    try:
        measure(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(tmp):
    ap = argparse.ArgumentParser()
    ap.add_argument('--qemu-build', required=True)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--results',
                    default=os.path.join(SRC, 'build/bench/timetravel.json'))
    a = ap.parse_args()
    qemu_img = os.path.join(a.qemu_build, 'qemu-img')
    disk = os.path.join(tmp, 'disk.img')
    journal = os.path.join(tmp, 'journal.img')
    pre = os.path.join(tmp, 'prealloc.img')
    with open(disk, 'wb') as f:
        for _ in range(IMG_MIB):
            f.write(os.urandom(MIB))
    blocks = IMG_MIB * MIB // 4096
    step = int(blocks * 0.618) | 1
    rand_step = step * 4096
    # journals that hold every run's history
    run([qemu_img, 'create', '-f', 'raw', journal, str(8 << 30)])
    run([qemu_img, 'create', '-f', 'raw', '-o', 'preallocation=full', pre,
         str(5 << 30)])
    tt = spec_tt(disk, journal)
    full = spec_tt(disk, pre)
    # the steady state: every block saved once
    for s in (tt, full):
        bench(qemu_img, s, True, MIB, 8, MIB, IMG_MIB)

    workloads = [
        # name, write, size, depth, step, count, unit
        ('rand-write', True, 4096, 32, rand_step, 50000, 'IOPS'),
        ('rand-read', False, 4096, 32, rand_step, 100000, 'IOPS'),
        ('seq-write', True, MIB, 8, MIB, 256, 'MiB/s'),
        ('seq-read', False, MIB, 8, MIB, 1024, 'MiB/s'),
    ]
    results = {'workloads': {}}
    print('softdev-timetravel against bare (median of %d paired runs)'
          % a.reps)
    print(f'{"workload":<11} {"bare":>10} {"timetravel":>11} {"ratio":>6} '
          f'{"spread":>12} {"target":>7}  {"prealloc":>10} {"ratio":>6}')
    for name, write, size, depth, stp, count, unit in workloads:
        t = {'bare': [], 'timetravel': [], 'full': []}
        for rep in range(a.reps):
            order = ['bare', 'timetravel'] if rep % 2 == 0 else \
                ['timetravel', 'bare']
            for s in order + ['full']:
                spec = {'bare': 'json:' + json.dumps(
                    {'driver': 'file', 'filename': disk}),
                    'timetravel': tt, 'full': full}[s]
                t[s].append(bench(qemu_img, spec, write, size, depth, stp,
                                  count))

        def speed(x):
            return count / x if unit == 'IOPS' else count * size / MIB / x
        ratios = [b / v for b, v in zip(t['bare'], t['timetravel'])]
        full_ratio = statistics.median(
            b / v for b, v in zip(t['bare'], t['full']))
        ratio = statistics.median(ratios)
        target = 0.77 if write else 0.97
        verdict = 'PASS' if ratio >= target else 'MISS'
        med = {k: statistics.median(speed(x) for x in v)
               for k, v in t.items()}
        print(f'{name:<11} {med["bare"]:>10.0f} {med["timetravel"]:>11.0f} '
              f'{ratio:>6.2f} {min(ratios):>5.2f}-{max(ratios):<5.2f} '
              f'{target:>5.2f} {verdict}  {med["full"]:>10.0f} '
              f'{full_ratio:>6.2f}')
        results['workloads'][name] = {
            'unit': unit, 'bare': med['bare'],
            'timetravel': med['timetravel'], 'ratio': ratio,
            'ratio_min': min(ratios), 'ratio_max': max(ratios),
            'target': target, 'verdict': verdict,
            'prealloc': med['full'], 'prealloc_ratio': full_ratio,
        }

    # View reads over NBD, against the bare disk over NBD
    sock = os.path.join(tmp, 'nbd.sock')
    q = Qsd(a.qemu_build, tmp, [
        '--blockdev', f'file,node-name=d0,filename={disk}',
        '--blockdev', f'file,node-name=j0,filename={journal}',
        '--blockdev', 'softdev-timetravel,node-name=tt0,file=d0,journal=j0',
        '--nbd-server', f'addr.type=unix,addr.path={sock}'])
    try:
        q.cmd('softdev-timetravel-mark', **{'node-name': 'tt0',
                                            'name': 'bench'})
        q.cmd('blockdev-add', driver='softdev-timetravel-view',
              **{'node-name': 'v0', 'timetravel': 'tt0', 'mark': 'bench',
                 'read-only': True})
        for node in ('v0', 'tt0'):
            q.cmd('block-export-add', type='nbd', id=node,
                  writable=node == 'tt0',
                  **{'node-name': node, 'name': node})
        # change half the disk after the mark: those extents come from
        # the journal
        nbd_tt = json.dumps({'driver': 'nbd', 'server': {
            'type': 'unix', 'path': sock}, 'export': 'tt0'})
        bench(qemu_img, 'json:' + nbd_tt, True, MIB, 8, 2 * MIB,
              IMG_MIB // 2)
        v = {'view': [], 'disk': []}
        for rep in range(a.reps):
            for node, key in (('v0', 'view'), ('tt0', 'disk')):
                spec = 'json:' + json.dumps({'driver': 'nbd', 'server': {
                    'type': 'unix', 'path': sock}, 'export': node})
                v[key].append(bench(qemu_img, spec, False, MIB, 8, MIB,
                                    IMG_MIB))
        vr = statistics.median(d / x for d, x in zip(v['disk'], v['view']))
        vmbs = statistics.median(IMG_MIB / x for x in v['view'])
        dmbs = statistics.median(IMG_MIB / x for x in v['disk'])
        extents = [e for e in q.cmd('query-softdevs')
                   if e['node-name'] == 'v0'][0]['extents']
        print(f'\nview reads over NBD (1 MiB, depth 8; half the disk from '
              f'the journal, {extents} extents): {vmbs:.0f} MiB/s, '
              f'{vr:.2f}x the present disk over NBD ({dmbs:.0f} MiB/s)')
        results['view'] = {'mib_s': vmbs, 'ratio_to_disk': vr,
                           'disk_mib_s': dmbs, 'extents': extents}
    finally:
        q.close()
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    with open(a.results, 'w') as f:
        json.dump(results, f, indent=1)


if __name__ == '__main__':
    sys.exit(main())
