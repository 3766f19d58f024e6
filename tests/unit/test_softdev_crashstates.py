"""
Unit tests of softdev-fault's offline crash-state tool
(scripts/softdev_crashstates.py): the enumeration's counts and bounds
(all prefixes; every subset for small windows; distinct random subsets up
to the bound; sets that leave the same bytes are one state), the reader
refusing malformed files with CrashStatesError, and images made from a
base.  block/softdev/fault-crash.c enumerates the same way; the iotest
softdev-fault-cache checks that the two agree.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import struct
import sys
import tempfile
import unittest

SCRIPTS = os.path.join(os.path.dirname(__file__), '..', '..', 'scripts')
sys.path.insert(0, SCRIPTS)

import softdev_crashstates as cs  # noqa: E402


def writes(*ranges):
    return [cs.Write('write', off, n, bytes([(i + 1) % 256]) * n)
            for i, (off, n) in enumerate(ranges)]


def encode(window, subsets, exhaustive=False, nb_prefixes=None):
    n = len(window.writes)
    out = cs.HEADER.pack(cs.MAGIC, cs.VERSION, int(exhaustive), n,
                         n + 1 if nb_prefixes is None else nb_prefixes,
                         n + 1 + len(subsets), 0, window.disk_size)
    ops = {v: k for k, v in cs.OPS.items()}
    for w in window.writes:
        out += cs.WRITE.pack(ops[w.op], w.offset, w.length) + (w.data or b'')
    for st in subsets:
        out += struct.pack(f'<I{len(st)}I', len(st), *st)
    return out


class Enumerate(unittest.TestCase):
    def test_all_subsets(self):
        subsets, exhaustive = cs.enumerate_subsets(
            writes((0, 512), (4096, 512), (8192, 512)))
        self.assertTrue(exhaustive)
        # The prefixes are implicit: [], [0], [0, 1], [0, 1, 2]
        self.assertEqual(sorted(map(tuple, subsets)),
                         [(0, 2), (1,), (1, 2), (2,)])

    def test_overwrites_are_one_state(self):
        # The second covers the first: {1} is the prefix {0, 1}
        self.assertEqual(cs.enumerate_subsets(writes((0, 4096), (0, 4096))),
                         ([], True))
        # Half covered: {1} leaves the first half as the disk was
        self.assertEqual(cs.enumerate_subsets(writes((0, 8192), (0, 4096))),
                         ([[1]], True))

    def test_bounded_and_seeded(self):
        w = writes(*[(i * 4096, 4096) for i in range(30)])
        subsets, exhaustive = cs.enumerate_subsets(w, 10, 7)
        self.assertFalse(exhaustive)
        self.assertEqual(len(subsets), 10)
        prefixes = {tuple(range(k)) for k in range(31)}
        self.assertFalse({tuple(s) for s in subsets} & prefixes)
        self.assertEqual(len({tuple(s) for s in subsets}), 10)
        self.assertEqual(cs.enumerate_subsets(w, 10, 7)[0], subsets)
        self.assertNotEqual(cs.enumerate_subsets(w, 10, 8)[0], subsets)
        self.assertEqual(cs.enumerate_subsets(w, 0, 7), ([], False))

    def test_large_window(self):
        # 2000 writes: the keys stay small, the prefixes implicit
        w = writes(*[((i * 7919) % 5000 * 512, 4096) for i in range(2000)])
        subsets, exhaustive = cs.enumerate_subsets(w, 16, 3)
        self.assertEqual((len(subsets), exhaustive), (16, False))

    def test_empty_window(self):
        self.assertEqual(cs.enumerate_subsets([]), ([], True))


class Read(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.path = os.path.join(self.tmp, 'w.sdcrash')
        self.window = cs.Window(1 << 20, writes((0, 1024), (512, 1024)))
        self.states = cs.enumerate_subsets(self.window.writes)[0]

    def tearDown(self):
        for f in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)

    def put(self, data):
        with open(self.path, 'wb') as f:
            f.write(data)

    def test_round_trip(self):
        self.put(encode(self.window, self.states, True))
        w = cs.read_file(self.path)
        self.assertEqual((w.writes, w.subsets, w.exhaustive),
                         (self.window.writes, self.states, True))
        self.assertEqual([w.state(i) for i in range(w.nb_states())],
                         [[], [0], [0, 1], [1]])

    def test_malformed(self):
        good = encode(self.window, self.states)
        hdr = cs.HEADER.size
        bad = {
            'empty': b'',
            'magic': b'X' + good[1:],
            'version': good[:8] + struct.pack('<I', 1) + good[12:],
            'prefixes': encode(self.window, self.states, nb_prefixes=1),
            'cut in a write': good[:hdr + 30],
            'cut in a state': good[:-2],
            'trailing bytes': good + b'\0',
            'bad op': good[:hdr] + b'\x09' + good[hdr + 1:],
            'past the disk': encode(cs.Window(1024, self.window.writes),
                                    self.states),
            'bad index': encode(self.window, self.states + [[5]]),
            'unsorted': encode(self.window, self.states + [[1, 0]]),
        }
        for what, data in bad.items():
            with self.subTest(what):
                self.put(data)
                with self.assertRaises(cs.CrashStatesError):
                    cs.read_file(self.path)

    def test_make_image(self):
        base = os.path.join(self.tmp, 'base.img')
        with open(base, 'wb') as f:
            f.write(b'\x55' * (1 << 20))
        out = os.path.join(self.tmp, 'state.raw')
        window = cs.Window(1 << 20, self.window.writes +
                           [cs.Write('discard', 4096, 512, None)])
        cs.make_image(window, [1, 2], base, out)
        with open(out, 'rb') as f:
            data = f.read()
        self.assertEqual(len(data), 1 << 20)
        self.assertEqual(data[:512], b'\x55' * 512)
        self.assertEqual(data[512:1536], b'\x02' * 1024)
        self.assertEqual(data[4096:4608], bytes(512))
        self.assertEqual(data[4608:8192], b'\x55' * 3584)


if __name__ == '__main__':
    unittest.main()
