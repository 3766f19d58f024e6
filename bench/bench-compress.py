#!/usr/bin/python3
"""
bench-compress.py --qemu-build DIR: softdev-compress's speed on
compressible data, in one run, as a user runs it (default options, no CPU
pinning):

- data: QEMU's own C sources and headers, concatenated to --size bytes
  (about 4:1 with zstd -1), in a file on tmpfs;
- zstd: 'zstd -1' compressing that file and 'zstd -d' decompressing its
  output, with the CLI's own defaults (one worker, one core), writing to
  /dev/null;
- device: 'qemu-img convert' of that file into a new softdev-compress
  image (default options: 64 KiB clusters, level 1) on tmpfs, and of that
  image into a null-co node (reads), both with convert's defaults.

Every figure is the median of --reps runs, the runs interleaved.  Targets
(issue 20): device write >= 0.8x zstd -1 compress, device read >= 0.8x
zstd -d.  A missed target prints MISS but does not fail; results go to
build/bench/compress.json.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
MIB = 1 << 20


def timed(cmd, **kw):
    """Seconds the command took"""
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=kw.pop('stdout',
                                                  subprocess.DEVNULL),
                   stderr=subprocess.PIPE, **kw)
    return time.monotonic() - t


def make_data(path, size):
    """QEMU's sources, concatenated and repeated to @size bytes"""
    files = sorted(glob.glob(os.path.join(SRC, 'build', 'qemu', '**', '*.[ch]'),
                             recursive=True))
    done = 0
    with open(path, 'wb') as out:
        while done < size:
            for name in files:
                if os.path.islink(name) or not os.path.isfile(name):
                    continue
                with open(name, 'rb') as f:
                    data = f.read()[:size - done]
                out.write(data)
                done += len(data)
                if done >= size:
                    break


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu-build', required=True)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--size', type=int, default=512 * MIB)
    ap.add_argument('--json', default=os.path.join(SRC, 'build', 'bench',
                                                   'compress.json'))
    a = ap.parse_args()
    qemu_img = os.path.join(a.qemu_build, 'qemu-img')
    tmp = tempfile.mkdtemp(prefix='softdev-bench-compress-',
                           dir='/dev/shm' if os.access('/dev/shm', os.W_OK)
                           else None)
    data = os.path.join(tmp, 'data')
    make_data(data, a.size)
    zst = data + '.zst'
    subprocess.run(['zstd', '-q', '-1', '-f', data, '-o', zst], check=True)
    img = os.path.join(tmp, 'disk.img')
    null = 'json:' + json.dumps({'driver': 'null-co', 'size': a.size})

    samples = {k: [] for k in ('zstd-compress', 'zstd-decompress',
                               'device-write', 'device-read')}
    for rep in range(a.reps):
        samples['zstd-compress'].append(
            a.size / timed(['zstd', '-1', '-c', data]) / 1e6)
        samples['zstd-decompress'].append(
            a.size / timed(['zstd', '-d', '-c', zst]) / 1e6)
        if os.path.exists(img):
            os.unlink(img)
        samples['device-write'].append(
            a.size / timed([qemu_img, 'convert', '-f', 'raw', '-O',
                            'softdev-compress', data, img]) / 1e6)
        samples['device-read'].append(
            a.size / timed([qemu_img, 'convert', '-n', '-f',
                            'softdev-compress', img, '--target-image-opts',
                            'driver=null-co,size=%d' % a.size]) / 1e6)
        print('bench-compress: repetition %d of %d done' % (rep + 1, a.reps),
              file=sys.stderr)
    info = json.loads(subprocess.run([qemu_img, 'info', '--output=json', img],
                                     check=True, capture_output=True,
                                     text=True).stdout)
    spec = info['format-specific']['data']
    med = {k: statistics.median(v) for k, v in samples.items()}
    checks = [
        ('device write / zstd -1', med['device-write'] /
         med['zstd-compress'], 0.8),
        ('device read / zstd -d', med['device-read'] /
         med['zstd-decompress'], 0.8),
    ]
    print('softdev-compress (defaults), %d MiB of C sources, ratio %.2f '
          '(zstd -1: %.2f), medians of %d, MB/s:'
          % (a.size // MIB, spec['compression-ratio'],
             a.size / os.path.getsize(zst), a.reps))
    for k in samples:
        print('  %-16s %8.0f  (%s)' % (k, med[k], ', '.join(
            '%.0f' % v for v in samples[k])))
    for name, r, target in checks:
        print('  %-28s %5.2f  %s (target %.2f)'
              % (name, r, 'PASS' if r >= target else 'MISS', target))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, 'w') as f:
        json.dump({'samples': samples, 'medians': med,
                   'compression-ratio': spec['compression-ratio'],
                   'zstd-ratio': a.size / os.path.getsize(zst),
                   'ratios': {n: r for n, r, _ in checks}}, f, indent=1)
    subprocess.run(['rm', '-rf', tmp])
    return 0


if __name__ == '__main__':
    sys.exit(main())
