"""
Cross-language tests of the tap wire format: messages encoded by the C
library (libsoftdev, via build/unit/tap-vectors) are byte for byte what
the Python package encodes and decode to the same fields, and Python's
encodings pass the C decoders (which reject broken ones with the expected
error).  tests/unit/run-c-tests.sh builds tap-vectors first.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import dataclasses
import os
import subprocess
import sys
import unittest

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
sys.path.insert(0, os.path.join(TOP, 'python'))

from softdev import protocol as p  # noqa: E402

VECTORS = os.path.join(TOP, 'build', 'unit', 'tap-vectors')
DATA = b'ABCDEFGH'
GiB = 1 << 30
MiB = 1 << 20
FEATURES = p.F_FLUSH | p.F_LOWER | p.F_SHM

# The same canonical messages as tests/unit/tap-vectors.c.  A name with
# "shm" is encoded with the shared-memory data path: a REQUEST or REPLY
# leaves its data (here DATA) out of the message.
CANONICAL = {
    'hello': p.Hello(FEATURES, GiB, MiB, 64),
    'hello_reply': p.HelloReply(FEATURES, GiB, MiB, 16),
    'hello_reply_default': p.HelloReply(FEATURES, GiB, MiB, 0),
    'shm_setup': p.ShmSetup(16, MiB),
    'request_write': p.Request(7, p.OP_WRITE, 4096, 8, p.REQ_FUA, DATA),
    'request_write_replay': p.Request(7, p.OP_WRITE, 4096, 8, p.REQ_FUA,
                                      DATA, replay=True),
    'request_read': p.Request(8, p.OP_READ, 512, 8),
    'request_write_shm': p.Request(9, p.OP_WRITE, 4096, 8, p.REQ_FUA, DATA,
                                   slot=3),
    'request_read_shm': p.Request(10, p.OP_READ, 512, 8, slot=5),
    'reply_read': p.Reply(8, 0, p.ACTION_COMPLETE, 0, DATA),
    'reply_forward_write': p.Reply(7, 0, p.ACTION_FORWARD, 8192, DATA),
    'reply_error': p.Reply(7, -5),
    'reply_read_shm': p.Reply(10, 0, p.ACTION_COMPLETE, 0, DATA),
    'reply_forward_write_shm': p.Reply(9, 0, p.ACTION_FORWARD, 8192, DATA),
    'lower_request_read': p.LowerRequest(1, p.OP_READ, 512, 8),
    'lower_reply_read': p.LowerReply(1, 0, DATA),
}


def encode(name, msg=None):
    return p.encode(CANONICAL[name] if msg is None else msg, 'shm' in name)


def decode_one(name, wire):
    """The message in wire, decoded as the canonical `name` would be;
    with SHM the data (not in the message) is taken from the slot, which
    here holds DATA."""
    magic, t, flags, handle, length, reserved = p.HEADER.unpack_from(wire)
    assert (magic, reserved) == (p.MAGIC, 0)
    assert length == len(wire) - p.HEADER_SIZE
    shm = 'shm' in name
    payload = wire[p.HEADER_SIZE:]
    msg = p.parse(t, handle, payload, flags, shm)
    if shm and t == p.TYPE_REQUEST and msg.op == p.OP_WRITE:
        msg.data = DATA[:msg.length]
    elif shm and t == p.TYPE_REPLY:
        msg.data = DATA[:p.REPLY.unpack_from(payload)[3]]
    return msg


def python_decoder(name):
    """A strict Decoder in the state where the canonical `name` is the
    next message it receives (with SHM: 16 slots holding DATA)."""
    shm = 'shm' in name
    region = bytearray(16 * MiB)
    for slot in (3, 5):
        region[slot * MiB:slot * MiB + 8] = DATA
    hello = CANONICAL['hello']
    reply = CANONICAL['hello_reply']
    if not name.startswith('hello'):
        # the canonical requests carry FUA, which a stateful decoder
        # accepts only if it was negotiated
        hello = dataclasses.replace(hello, features=FEATURES | p.F_FUA)
        reply = dataclasses.replace(reply, features=FEATURES | p.F_FUA)
    if not shm and name != 'shm_setup':
        reply = dataclasses.replace(reply, features=reply.features &
                                    ~p.F_SHM)
    side = p.DEVICE if CANONICAL[name].TYPE in (
        p.TYPE_HELLO, p.TYPE_SHM_SETUP, p.TYPE_REQUEST,
        p.TYPE_LOWER_REPLY) else p.CLIENT
    dec = p.Decoder(side, map_shm=lambda setup: region)
    if side == p.DEVICE:
        if name != 'hello':
            dec.feed(p.encode(hello))
            dec.sending(reply)
        if shm and name != 'shm_setup':
            dec.feed(p.encode(CANONICAL['shm_setup']))
        if name.startswith('lower_reply'):
            dec.sending(CANONICAL['lower_request_read'])
        return dec
    dec.sending(hello)
    if name.startswith('hello_reply'):
        return dec
    dec.feed(p.encode(reply))
    if shm:
        dec.sending(CANONICAL['shm_setup'])
    if name.startswith('reply'):
        answered = ('request_write' if 'write' in name or 'error' in name
                    else 'request_read') + ('_shm' if shm else '')
        dec.sending(CANONICAL[answered])
    return dec


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
                wire = bytes.fromhex(hexdata)
                self.assertEqual(wire.hex(), encode(name).hex())
                self.assertEqual(decode_one(name, wire), CANONICAL[name])
                seen.add(name)
        self.assertEqual(seen, set(CANONICAL))

    def test_python_encodes_c_decodes(self):
        lines = ''.join(f'{name} {encode(name).hex()}\n'
                        for name in CANONICAL)
        out = self.run_vectors('check', lines).splitlines()
        self.assertEqual(out, [f'{name} OK' for name in CANONICAL])

    def test_c_rejects_broken_python_encodings(self):
        def bad(name, **changes):
            return encode(name, dataclasses.replace(CANONICAL[name],
                                                    **changes))

        def flagged(name, flags):
            wire = bytearray(encode(name))
            wire[6:8] = flags.to_bytes(2, 'little')
            return bytes(wire)

        cases = [
            ('request_read', bad('request_read', op=9),
             'unknown request op'),
            ('reply_read', bad('reply_read', data=DATA[:4]),
             'reply data does not match the request'),
            ('hello', bad('hello', max_inflight=0),
             'max_inflight out of range'),
            ('hello', bad('hello', max_inflight=1025),
             'max_inflight out of range'),
            ('hello', bad('hello', max_data=16 * MiB + 1),
             'max_data out of range (64 KiB to 16 MiB)'),
            ('hello_reply', bad('hello_reply', max_inflight=65),
             'device raised max_inflight'),
            ('shm_setup', bad('shm_setup', slots=8),
             'SHM_SETUP geometry differs from the handshake'),
            ('request_read', bad('request_read', slot=1),
             'reserved request field set'),
            ('request_read_shm', bad('request_read_shm', slot=16),
             'request slot out of range'),
            ('request_write_shm', p.encode(CANONICAL['request_write_shm']),
             'request data does not match its length'),
            ('reply_read_shm', p.encode(CANONICAL['reply_read_shm']),
             'reply data does not match its length'),
            ('request_read', flagged('request_read', 2),
             'reserved header bits set'),
            ('lower_request_read', flagged('lower_request_read', 1),
             'reserved header bits set'),
        ]
        lines = ''.join(f'{n} {w.hex()}\n' for n, w, _ in cases)
        out = self.run_vectors('check', lines).splitlines()
        self.assertEqual(out, [f'{n} ERR {e}' for n, _, e in cases])
        # The Python decoder rejects them too.
        for name, wire, _ in cases:
            with self.subTest(name=name, wire=wire.hex()):
                with self.assertRaises(p.ProtocolError):
                    python_decoder(name).feed(wire)


class PythonDecoderTest(unittest.TestCase):
    """The canonical vectors pass the stateful Python decoder (no C)."""

    def test_canonical_messages_decode(self):
        for name, msg in CANONICAL.items():
            with self.subTest(name):
                got = python_decoder(name).feed(encode(name))
                self.assertEqual(got, [msg])


if __name__ == '__main__':
    unittest.main()
