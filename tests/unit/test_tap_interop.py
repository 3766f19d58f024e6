"""
Cross-language tests of the tap wire format: messages encoded by the C
library (libsoftdev, via build/unit/tap-vectors) decode in the Python
package to the same fields, and Python's encodings pass the C decoders.
tests/unit/run-c-tests.sh builds tap-vectors first.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import subprocess
import sys
import unittest

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
sys.path.insert(0, os.path.join(TOP, 'python'))

from softdev import protocol as p  # noqa: E402

VECTORS = os.path.join(TOP, 'build', 'unit', 'tap-vectors')
DATA = b'ABCDEFGH'

# The same canonical messages as tests/unit/tap-vectors.c
CANONICAL = {
    'hello': p.Hello(p.F_FLUSH | p.F_LOWER, 1 << 30, 1 << 20),
    'hello_reply': p.HelloReply(p.F_FLUSH | p.F_LOWER, 1 << 30, 1 << 20),
    'request_write': p.Request(7, p.OP_WRITE, 4096, 8, p.REQ_FUA, DATA),
    'request_read': p.Request(8, p.OP_READ, 512, 8),
    'reply_read': p.Reply(8, 0, p.ACTION_COMPLETE, 0, DATA),
    'reply_forward_write': p.Reply(7, 0, p.ACTION_FORWARD, 8192, DATA),
    'reply_error': p.Reply(7, -5),
    'lower_request_read': p.LowerRequest(1, p.OP_READ, 512, 8),
    'lower_reply_read': p.LowerReply(1, 0, DATA),
}


def decode_one(wire):
    magic, t, flags, handle, length, reserved = p.HEADER.unpack_from(wire)
    assert (magic, flags, reserved) == (p.MAGIC, 0, 0)
    assert length == len(wire) - p.HEADER_SIZE
    return p.parse(t, handle, wire[p.HEADER_SIZE:])


@unittest.skipUnless(os.access(VECTORS, os.X_OK),
                     'build/unit/tap-vectors missing: run '
                     'tests/unit/run-c-tests.sh first (make check does)')
class InteropTest(unittest.TestCase):
    def run_vectors(self, mode, stdin=''):
        return subprocess.run([VECTORS, mode], input=stdin, text=True,
                              capture_output=True, check=True).stdout

    def test_c_encodes_python_decodes(self):
        seen = set()
        for line in self.run_vectors('emit').splitlines():
            name, hexdata = line.split()
            with self.subTest(name):
                msg = decode_one(bytes.fromhex(hexdata))
                self.assertEqual(msg, CANONICAL[name])
                seen.add(name)
        self.assertEqual(seen, set(CANONICAL))

    def test_python_encodes_c_decodes(self):
        lines = ''.join(f'{name} {p.encode(msg).hex()}\n'
                        for name, msg in CANONICAL.items())
        out = self.run_vectors('check', lines).splitlines()
        self.assertEqual(out, [f'{name} OK' for name in CANONICAL])

    def test_c_rejects_broken_python_encodings(self):
        bad = {
            'request_read': p.encode(p.Request(8, 9, 512, 8)),
            'reply_read': p.encode(p.Reply(8, 0, p.ACTION_COMPLETE, 0,
                                           DATA[:4])),
            'hello': p.encode(p.Hello(p.F_SHM, 1 << 30, 1 << 20)),
        }
        lines = ''.join(f'{n} {w.hex()}\n' for n, w in bad.items())
        out = self.run_vectors('check', lines).splitlines()
        self.assertEqual(out, [
            'request_read ERR unknown request op',
            'reply_read ERR reply data does not match the request',
            'hello ERR shared-memory transport is not defined yet',
        ])


if __name__ == '__main__':
    unittest.main()
