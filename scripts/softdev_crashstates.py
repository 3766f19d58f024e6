#!/usr/bin/env python3
"""
softdev-fault's crash states, offline (docs/specs/softdev-fault.rst): read
the file softdev-fault-crash-states writes (a window of writes, their
data, and the states), list the states, enumerate them anew with other
bounds, and make the images a power cut could leave: a copy of the disk
below (as it was when the file was written) with a state's writes
applied in order.

  softdev_crashstates.py list FILE [--max-subsets N --seed S]
  softdev_crashstates.py make FILE --base DISK --out-dir DIR
                          [--states 0,5,7] [--max-subsets N --seed S]

With --max-subsets or --seed the states are enumerated here, from the
window, the same way QEMU does (so the same bounds give the same states);
without, those of the file are used.  Images are raw, sparse copies of
the base.  Also importable: read_file(), enumerate_subsets(), make_image().

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import bisect
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

VERSION = 2
MAGIC = b'SDCRASH1'
HEADER = struct.Struct('<8sIIIIIIQ')
WRITE = struct.Struct('<B7xQQ')
OPS = {1: 'write', 2: 'write-zeroes', 3: 'discard'}
EXHAUSTIVE = 1
ALL_MAX = 20            # the most writes for which every subset is tried
MASK64 = (1 << 64) - 1


class CrashStatesError(Exception):
    """The file is not a valid crash-states file."""


@dataclass
class Write:
    op: str
    offset: int
    length: int
    data: Optional[bytes]       # writes only


@dataclass
class Window:
    """The writes, and the states besides the prefixes: state k < n + 1
    is the first k writes, state n + 1 + i is subsets[i]"""
    disk_size: int
    writes: List[Write]
    subsets: List[List[int]] = field(default_factory=list)
    exhaustive: bool = False

    def nb_states(self) -> int:
        return len(self.writes) + 1 + len(self.subsets)

    def state(self, i: int) -> List[int]:
        n = len(self.writes) + 1
        return list(range(i)) if i < n else self.subsets[i - n]


def read_file(path: str) -> Window:
    with open(path, 'rb') as f:
        buf = f.read()
    if len(buf) < HEADER.size:
        raise CrashStatesError(f'{path}: too short for a header')
    magic, version, flags, nb_writes, nb_prefixes, nb_states, _, size = \
        HEADER.unpack_from(buf)
    if magic != MAGIC or version != VERSION:
        raise CrashStatesError(f'{path}: not a softdev crash-states file '
                               f'(version {VERSION})')
    if nb_prefixes != nb_writes + 1 or nb_states < nb_prefixes:
        raise CrashStatesError(f'{path}: bad counts in the header')
    at = HEADER.size
    w = Window(size, [], exhaustive=bool(flags & EXHAUSTIVE))
    for i in range(nb_writes):
        if at + WRITE.size > len(buf):
            raise CrashStatesError(f'{path}: write {i} is cut short')
        op, offset, length = WRITE.unpack_from(buf, at)
        at += WRITE.size
        if op not in OPS or length == 0 or offset + length > size:
            raise CrashStatesError(f'{path}: write {i} is invalid')
        data = None
        if OPS[op] == 'write':
            data = buf[at:at + length]
            if len(data) != length:
                raise CrashStatesError(f'{path}: write {i} is cut short')
            at += length
        w.writes.append(Write(OPS[op], offset, length, data))
    for i in range(nb_prefixes, nb_states):
        if at + 4 > len(buf):
            raise CrashStatesError(f'{path}: state {i} is cut short')
        (nb,) = struct.unpack_from('<I', buf, at)
        at += 4
        if nb > nb_writes or at + 4 * nb > len(buf):
            raise CrashStatesError(f'{path}: state {i} is invalid')
        idx = list(struct.unpack_from(f'<{nb}I', buf, at))
        at += 4 * nb
        if any(j >= nb_writes for j in idx) or idx != sorted(set(idx)):
            raise CrashStatesError(f'{path}: state {i} is invalid')
        w.subsets.append(idx)
    if at != len(buf):
        raise CrashStatesError(f'{path}: bytes after the last state')
    return w


def _rand(state: List[int]) -> int:
    """xorshift64*, as softdev-fault's (block/softdev/fault-rules.c)."""
    x = state[0]
    x ^= x >> 12
    x ^= (x << 25) & MASK64
    x ^= x >> 27
    state[0] = x
    return (x * 0x2545f4914f6cdd1d) & MASK64


def _mix(x: int) -> int:
    """splitmix64's finaliser, as fault-crash.c's fc_mix()"""
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & MASK64
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & MASK64
    return x ^ (x >> 31)


def enumerate_subsets(writes: List[Write], max_subsets: int = 64,
                      seed: int = 1) -> Tuple[List[List[int]], bool]:
    """The states besides the n + 1 prefixes: all other subsets if there
    are at most max_subsets, else random distinct ones; as
    block/softdev/fault-crash.c.  Returns them and whether they are all.
    A state's key is a 128-bit sum over segments of a hash of (segment,
    write), kept up to date as writes are laid over."""
    n = len(writes)
    bounds = sorted({p for w in writes for p in (w.offset,
                                                 w.offset + w.length)})
    nseg = max(len(bounds) - 1, 0)
    src = [-1] * nseg
    key = [0, 0]
    seen, subsets = set(), []

    def put(j, v):
        old, new = j << 32 | (src[j] + 1), j << 32 | (v + 1)
        key[0] = (key[0] + _mix(new) - _mix(old)) & MASK64
        key[1] = (key[1] + _mix(new ^ 0x5bd1e9955bd1e995) -
                  _mix(old ^ 0x5bd1e9955bd1e995)) & MASK64
        src[j] = v

    def apply(i):
        w = writes[i]
        j = bisect.bisect_left(bounds, w.offset)
        while j < nseg and bounds[j] < w.offset + w.length:
            put(j, i)
            j += 1

    def add(inside):
        for j in range(nseg):
            put(j, -1)
        for i in range(n):
            if inside[i]:
                apply(i)
        if tuple(key) in seen:
            return False
        seen.add(tuple(key))
        subsets.append([i for i in range(n) if inside[i]])
        return True

    for k in range(n + 1):
        seen.add(tuple(key))
        if k < n:
            apply(k)
    exhaustive = n < ALL_MAX and (1 << n) - (n + 1) <= max_subsets
    if exhaustive:
        for mask in range(1 << n):
            if mask & (mask + 1):           # not a prefix
                add([bool(mask >> i & 1) for i in range(n)])
    else:
        rng = [seed or 0x9e3779b97f4a7c15]
        added = draw = 0
        while draw < 8 * max_subsets and added < max_subsets:
            added += add([bool(_rand(rng) >> 63) for _ in range(n)])
            draw += 1
    return subsets, exhaustive


def make_image(window: Window, state: List[int], base: str, out: str):
    """The disk state @state leaves: a copy of @base, its writes on it."""
    _sparse_copy(base, out)
    with open(out, 'r+b') as f:
        for i in state:
            w = window.writes[i]
            f.seek(w.offset)
            # A kept discard reads as zeroes, as it did from the cache
            f.write(w.data if w.data is not None else bytes(w.length))


def _sparse_copy(src: str, dst: str):
    """Copy @src to @dst, keeping its holes."""
    with open(src, 'rb') as s, open(dst, 'wb') as d:
        size = os.fstat(s.fileno()).st_size
        d.truncate(size)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(s.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break                       # only a hole is left
            hole = os.lseek(s.fileno(), data, os.SEEK_HOLE)
            s.seek(data)
            d.seek(data)
            left = hole - data
            while left:
                chunk = s.read(min(left, 1 << 20))
                d.write(chunk)
                left -= len(chunk)
            pos = hole


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('command', choices=('list', 'make'))
    ap.add_argument('file', help='written by softdev-fault-crash-states')
    ap.add_argument('--max-subsets', type=int,
                    help='enumerate anew: the most subsets (QEMU: 64)')
    ap.add_argument('--seed', type=int,
                    help='enumerate anew: seed of the random subsets '
                    '(QEMU: 1)')
    ap.add_argument('--base', help='make: a copy of the disk below, as it '
                    'was when the file was written')
    ap.add_argument('--out-dir', help='make: where state-N.raw go')
    ap.add_argument('--states', help='make: only these (0,5,7)')
    args = ap.parse_args(argv)
    try:
        window = read_file(args.file)
    except (OSError, CrashStatesError) as e:
        print(f'softdev_crashstates: {e}', file=sys.stderr)
        return 1
    if args.max_subsets is not None or args.seed is not None:
        window.subsets, window.exhaustive = enumerate_subsets(
            window.writes, 64 if args.max_subsets is None
            else args.max_subsets, 1 if args.seed is None else args.seed)
    n = len(window.writes)
    if args.command == 'list':
        print(f'{n} writes, {window.nb_states()} states ({n + 1} prefixes, '
              f'{len(window.subsets)} other subsets'
              f'{", all there are" if window.exhaustive else ""})')
        for i, w in enumerate(window.writes):
            print(f'write {i}: {w.op} {w.offset} +{w.length}')
        for i in range(window.nb_states()):
            kind = 'prefix' if i <= n else 'subset'
            print(f'state {i}: {kind} '
                  f'[{",".join(map(str, window.state(i)))}]')
        return 0
    if not args.base or not args.out_dir:
        print('softdev_crashstates: make needs --base and --out-dir',
              file=sys.stderr)
        return 2
    if os.path.getsize(args.base) != window.disk_size:
        print(f'softdev_crashstates: {args.base} is not '
              f'{window.disk_size} bytes, the disk of the window',
              file=sys.stderr)
        return 1
    pick = range(window.nb_states()) if not args.states else \
        [int(x) for x in args.states.split(',')]
    os.makedirs(args.out_dir, exist_ok=True)
    for i in pick:
        if not 0 <= i < window.nb_states():
            print(f'softdev_crashstates: no state {i}', file=sys.stderr)
            return 1
        out = os.path.join(args.out_dir, f'state-{i}.raw')
        make_image(window, window.state(i), args.base, out)
        print(out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
