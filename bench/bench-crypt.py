#!/usr/bin/python3
"""
bench-crypt.py --qemu-build DIR: softdev-crypt's speed, in one run, as a
user runs it (default options, no CPU pinning):

- openssl: 'openssl speed -evp aes-256-xts' with its own defaults (one
  process, one core), its largest block size (16384 bytes);
- raw: softdev-crypt's own cipher, the implementation it picks on this
  CPU (bench/xts-speed.c, built with -O2 as QEMU is), encrypting and
  decrypting 1 MiB buffers of 512-byte sectors in place, one core;
- device: 'qemu-img bench' 1 MiB writes and reads, queue depth 8,
  through softdev-crypt (default options: 512-byte sectors, x-impl=auto)
  above a null-co node, so that the figure is the soft device's own cost
  (cipher, bounce buffer, block layer), not a disk's;
- stack: the same above a page-cached 1 GiB file on tmpfs, against the
  bare file node (informational: what a user's stack sees when its disk
  costs as much as the cipher).

qemu-img runs with -t writeback and -i io_uring (threads where io_uring
cannot be used), as in bench/run-bench.sh.

Every figure is the median of --reps runs, the runs of each workload
interleaved.  Targets (issue 20): device >= 0.5x openssl, device >= 0.9x
raw (encrypt for writes, decrypt for reads).  A missed target prints MISS
but does not fail; results go to build/bench/crypt.json.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
MIB = 1 << 20
KEY = bytes((i * 37 + 11) % 256 for i in range(64))
AIO = 'io_uring'        # as bench/run-bench.sh: the fastest here


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True,
                          **kw).stdout


def openssl_speed():
    """MB/s (10^6 bytes a second) at openssl's largest default size"""
    out = run(['openssl', 'speed', '-elapsed', '-evp', 'aes-256-xts'])
    line = [t for t in out.splitlines() if t.startswith('AES-256-XTS')][-1]
    return float(line.split()[-1].rstrip('k')) * 1000 / 1e6


def raw_speed(prog):
    """{'encrypt': MB/s, 'decrypt': MB/s, 'impl': name}"""
    out = run([prog])
    res = {}
    for t in out.splitlines():
        impl, op, mbs, _ = t.split()
        res[op] = float(mbs)
        res['impl'] = impl
    return res


def qemu_img_bench(qemu_img, keyfile, node, write, count):
    """MB/s of 'qemu-img bench' with 1 MiB requests at depth 8"""
    cmd = [qemu_img, 'bench', '--object',
           'secret,id=k0,format=raw,file=%s' % keyfile,
           '-c', str(count), '-d', '8', '-s', '1M', '-t', 'writeback',
           '-i', AIO]
    if write:
        cmd += ['-w', '--pattern', '165']
    cmd.append('json:' + json.dumps(node))
    out = run(cmd)
    secs = float(re.search(r'Run completed in ([0-9.]+) seconds', out)
                 .group(1))
    return count * MIB / secs / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu-build', required=True)
    ap.add_argument('--reps', type=int, default=7)
    ap.add_argument('--count', type=int, default=2048,
                    help='1 MiB requests per qemu-img run (default 2048)')
    ap.add_argument('--json', default=os.path.join(SRC, 'build', 'bench',
                                                   'crypt.json'))
    a = ap.parse_args()
    qemu_img = os.path.join(a.qemu_build, 'qemu-img')
    tmp = tempfile.mkdtemp(prefix='softdev-bench-crypt-',
                           dir='/dev/shm' if os.access('/dev/shm', os.W_OK)
                           else None)
    keyfile = os.path.join(tmp, 'key')
    with open(keyfile, 'wb') as f:
        f.write(KEY)
    img = os.path.join(tmp, 'disk.img')
    with open(img, 'wb') as f:
        for _ in range(1024):
            f.write(b'\xa5' * MIB)
    global AIO
    if subprocess.run([qemu_img, 'bench', '-c', '1', '-i', AIO, '-f', 'raw',
                       img], capture_output=True).returncode:
        AIO = 'threads'
    prog = os.path.join(tmp, 'xts-speed')
    run([os.environ.get('CC', 'gcc'), '-std=gnu11', '-O2', '-I', SRC,
         os.path.join(SRC, 'bench', 'xts-speed.c'),
         os.path.join(SRC, 'block', 'softdev', 'crypt-xts.c'), '-o', prog])

    null = {'driver': 'null-co', 'size': 1 << 30, 'read-zeroes': False}
    filen = {'driver': 'file', 'filename': img}
    stacks = {
        'device': {'driver': 'softdev-crypt', 'key-secret': 'k0',
                   'file': null},
        'stack': {'driver': 'softdev-crypt', 'key-secret': 'k0',
                  'file': filen},
        'bare': filen,
    }
    samples = {k: [] for k in ('openssl', 'raw-encrypt', 'raw-decrypt')}
    impl = None
    for s in stacks:
        for op in ('write', 'read'):
            samples['%s-%s' % (s, op)] = []
    for rep in range(a.reps):
        samples['openssl'].append(openssl_speed())
        r = raw_speed(prog)
        impl = r['impl']
        samples['raw-encrypt'].append(r['encrypt'])
        samples['raw-decrypt'].append(r['decrypt'])
        for s, node in stacks.items():
            for op in ('write', 'read'):
                samples['%s-%s' % (s, op)].append(
                    qemu_img_bench(qemu_img, keyfile, node, op == 'write',
                                   a.count))
        print('bench-crypt: repetition %d of %d done' % (rep + 1, a.reps),
              file=sys.stderr)
    med = {k: statistics.median(v) for k, v in samples.items()}

    def ratio(x, y):
        return med[x] / med[y]

    checks = [
        ('device write / openssl', ratio('device-write', 'openssl'), 0.5),
        ('device read / openssl', ratio('device-read', 'openssl'), 0.5),
        ('device write / raw encrypt', ratio('device-write', 'raw-encrypt'),
         0.9),
        ('device read / raw decrypt', ratio('device-read', 'raw-decrypt'),
         0.9),
        ('stack write / bare file', ratio('stack-write', 'bare-write'), None),
        ('stack read / bare file', ratio('stack-read', 'bare-read'), None),
    ]
    print('softdev-crypt (x-impl=auto: %s), medians of %d, MB/s:'
          % (impl, a.reps))
    for k in samples:
        print('  %-14s %8.0f  (%s)' % (k, med[k], ', '.join(
            '%.0f' % v for v in samples[k])))
    for name, r, target in checks:
        verdict = ('PASS' if r >= target else 'MISS') if target else 'info'
        print('  %-28s %5.2f  %s%s' % (name, r, verdict,
                                       ' (target %.2f)' % target
                                       if target else ''))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, 'w') as f:
        json.dump({'impl': impl, 'samples': samples, 'medians': med,
                   'ratios': {n: r for n, r, _ in checks}}, f, indent=1)
    subprocess.run(['rm', '-rf', tmp])
    return 0


if __name__ == '__main__':
    sys.exit(main())
