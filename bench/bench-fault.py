#!/usr/bin/python3
"""
bench-fault.py --qemu-build DIR: what softdev-fault costs while no rule
fires, against the bare stack in the same run, as a user runs it (default
options, no CPU pinning), with 'qemu-img bench' (io_uring,
cache=writeback) on a page-cached 1 GiB disk on tmpfs:

- bare: json:{"driver":"file",...} on the disk;
- fault: softdev-fault on the same disk, no rules (its defaults);
- softdev-trace (reported beside): the soft-device core's own cost, a
  soft device that only counts (no trace file), to tell it from
  softdev-fault's;
- raw (reported beside): stock QEMU's lightest node above a file, the
  raw format with no offset: what any node in the graph costs, the
  floor of every soft device's cost; fault/raw is softdev-fault's ratio
  to it;
- fault-rule (reported beside): with one rule that never matches (a
  write rule on a range past the requests'), so every request is matched
  against it;
- fault-volatile (reported beside): cache-model=volatile, default
  cache-size: every write is copied into the cache and written back at
  flushes (qemu-img bench flushes only at the end) and when the cache is
  full.

Workloads as bench/run-bench.sh's: rand-read and rand-write (4 KiB, queue
depth 32, golden-ratio step), seq-read and seq-write (1 MiB, depth 8).
Each repetition runs bare and fault back to back in alternating order,
then the others; ratios are medians of the per-repetition ratios against
bare.  Target (issue 21): with no rule firing, softdev-fault costs at most
3% of bare IOPS (>= 0.97x).  A missed target prints MISS but does not
fail; results go to build/bench/fault.json.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
MIB = 1 << 20
IMG = 1024 * MIB
TARGET = 0.97


def bench(qemu_img, spec, write, size, depth, step, count):
    """Seconds 'qemu-img bench' reports"""
    cmd = [qemu_img, 'bench', '-t', 'writeback', '-i', 'io_uring', '-c',
           str(count), '-d', str(depth), '-s', str(size), '-S', str(step),
           '--pattern=165'] + (['-w'] if write else []) + [spec]
    out = subprocess.run(cmd, check=True, capture_output=True,
                         text=True).stdout
    return float(re.search(r'Run completed in ([0-9.]+) seconds', out)[1])


def specs(disk):
    f = {'driver': 'file', 'filename': disk}
    return {
        'bare': f,
        'fault': {'driver': 'softdev-fault', 'file': f},
        'softdev-trace': {'driver': 'softdev-trace', 'file': f},
        'raw': {'driver': 'raw', 'file': f},
        'fault-rule': {'driver': 'softdev-fault', 'file': f,
                       'rules': [{'op': 'write', 'offset': 2 * IMG,
                                  'action': 'fail'}]},
        'fault-volatile': {'driver': 'softdev-fault', 'file': f,
                           'cache-model': 'volatile'},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu-build', required=True)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--json',
                    default=os.path.join(SRC, 'build/bench/fault.json'))
    a = ap.parse_args()
    qemu_img = os.path.join(a.qemu_build, 'qemu-img')
    golden = (int(IMG // 4096 * 0.618) | 1) * 4096
    workloads = [('rand-read', False, 4096, 32, golden, 200000),
                 ('rand-write', True, 4096, 32, golden, 200000),
                 ('seq-read', False, MIB, 8, MIB, 4000),
                 ('seq-write', True, MIB, 8, MIB, 4000)]
    results = {}
    with tempfile.TemporaryDirectory(dir='/dev/shm',
                                     prefix='bench-fault-') as tmp:
        disk = os.path.join(tmp, 'disk.img')
        subprocess.run([qemu_img, 'create', '-q', '-f', 'raw', disk,
                        str(IMG)], check=True)
        subprocess.run([qemu_img, 'bench', '-w', '-t', 'writeback', '-c',
                        str(IMG // MIB), '-s', str(MIB), '-S', str(MIB),
                        disk], check=True, capture_output=True)
        stacks = {k: 'json:' + json.dumps(v) for k, v in specs(disk).items()}
        print(f'softdev-fault without a rule firing against bare (median of '
              f'{a.reps} paired runs; target >= {TARGET}x)')
        print(f'{"workload":<11} {"bare":>10} {"fault":>10} {"ratio":>6} '
              f'{"":>4} {"trace":>7} {"raw":>7} {"fault/raw":>9} '
              f'{"fault-rule":>10} {"fault-volatile":>14}')
        for name, write, size, depth, step, count in workloads:
            ratios = {k: [] for k in list(stacks) + ['fault/raw']
                      if k != 'bare'}
            speeds = {k: [] for k in stacks}
            for rep in range(a.reps):
                order = ['bare', 'fault'] if rep % 2 == 0 else \
                    ['fault', 'bare']
                secs = {k: bench(qemu_img, stacks[k], write, size, depth,
                                 step, count)
                        for k in order + ['softdev-trace', 'raw',
                                            'fault-rule', 'fault-volatile']}
                for k, s in secs.items():
                    speeds[k].append(count / s)
                    if k != 'bare':
                        ratios[k].append(secs['bare'] / s)
                ratios['fault/raw'].append(secs['raw'] / secs['fault'])
            med = {k: statistics.median(v) for k, v in speeds.items()}
            ratio = {k: statistics.median(v) for k, v in ratios.items()}
            unit = 'IOPS' if size == 4096 else 'MiB/s'
            scale = 1 if size == 4096 else size / MIB
            ok = 'PASS' if ratio['fault'] >= TARGET else 'MISS'
            print(f'{name:<11} {med["bare"] * scale:>10.0f} '
                  f'{med["fault"] * scale:>10.0f} {ratio["fault"]:>6.3f} '
                  f'{ok:>4} {ratio["softdev-trace"]:>6.3f}x '
                  f'{ratio["raw"]:>6.3f}x {ratio["fault/raw"]:>8.3f}x '
                  f'{ratio["fault-rule"]:>9.3f}x '
                  f'{ratio["fault-volatile"]:>13.3f}x  ({unit})')
            results[name] = {'unit': unit, 'ratio': ratio, 'verdict': ok,
                             **{k: v * scale for k, v in med.items()}}
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, 'w') as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
