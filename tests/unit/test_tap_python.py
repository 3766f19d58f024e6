"""
Unit tests of the Python tap-protocol package (python/softdev): message
round-trips, every validation rule of the strict decoder, a bounded fuzz,
the example devices driven by TestClient, and the server's survival of
broken clients, reconnects and its command line.  No QEMU is needed.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import errno
import logging
import os
import random
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), '..',
                                          '..', 'python'))
sys.path.insert(0, PYTHON_DIR)

from softdev import (BlockDevice, DeviceError, Forward, Server,  # noqa: E402
                     parse_size, serve)
from softdev import protocol as p  # noqa: E402
from softdev.examples.latency import Latency  # noqa: E402
from softdev.examples.logger import Logger  # noqa: E402
from softdev.examples.passthrough import Passthrough  # noqa: E402
from softdev.examples.ramdisk import RamDisk  # noqa: E402
from softdev.examples.xor import Xor  # noqa: E402
from softdev.server import MAX_DEFERRED, Connection  # noqa: E402
from softdev.testclient import TestClient  # noqa: E402

MiB = 1 << 20
F_NOSHM = p.F_ALL & ~p.F_SHM    # every known feature but shared memory


# -- building (possibly broken) wire bytes ---------------------------------

def raw(t, payload=b'', handle=0, magic=p.MAGIC, flags=0, reserved=0,
        length=None):
    length = len(payload) if length is None else length
    return p.HEADER.pack(magic, t, flags, handle, length, reserved) + payload


def hello_payload(version=1, cls=1, features=F_NOSHM, lower_size=MiB,
                  max_data=65536, max_inflight=64, r1=0):
    return p.HELLO.pack(version, cls, features, lower_size, max_data,
                        max_inflight, r1)


def reply_payload(version=1, cls=1, features=0, size=MiB, max_data=65536,
                  max_inflight=0):
    return p.HELLO_REPLY.pack(version, cls, features, size, max_data,
                              max_inflight)


def shm_payload(slots=4, slot_size=65536, r1=0, ring_entries=0):
    return p.SHM_SETUP.pack(slots, slot_size, ring_entries, r1)


def request_payload(op, offset=0, length=0, flags=0, slot=0, data=b''):
    return p.REQUEST.pack(op, flags, slot, offset, length) + data


def lreply_payload(result=0, reserved=0, nbytes=None, data=b''):
    nbytes = len(data) if nbytes is None else nbytes
    return p.LOWER_REPLY.pack(result, reserved, nbytes) + data


def rpl_payload(result=0, action=0, offset=0, nbytes=None, data=b''):
    nbytes = len(data) if nbytes is None else nbytes
    return p.REPLY.pack(result, action, offset, nbytes) + data


def fresh_device():
    return p.Decoder(p.DEVICE)


def ready_device(features=F_NOSHM, lower_size=MiB, size=0, max_data=65536,
                 offered_max=65536, max_inflight=64):
    """A device-side decoder after a handshake."""
    d = p.Decoder(p.DEVICE)
    d.feed(p.encode(p.Hello(p.F_ALL, lower_size, offered_max, max_inflight)))
    d.sending(p.HelloReply(features, size, max_data))
    return d


def ram_region(setup):
    """map_shm for tests: the shared memory is a bytearray."""
    return bytearray(setup.slots * setup.slot_size)


def shm_device(features=p.F_ALL, slots=4, **kwargs):
    """A device-side decoder after a handshake with SHM (slots slots of
    65536 bytes, a bytearray: dec.shm)."""
    d = ready_device(features, max_inflight=slots, **kwargs)
    d.map_shm = ram_region
    d.feed(p.encode(p.ShmSetup(slots, 65536)))
    return d


def shm_pending(slots=4):
    """A device-side decoder that accepted SHM and awaits SHM_SETUP."""
    d = ready_device(p.F_ALL, max_inflight=slots)
    d.map_shm = ram_region
    return d


def ready_client(features=F_NOSHM, lower_size=MiB, size=0, max_data=65536,
                 offered=p.F_ALL):
    """A client-side decoder after a handshake."""
    c = p.Decoder(p.CLIENT)
    c.sending(p.Hello(offered, lower_size, 65536))
    c.feed(p.encode(p.HelloReply(features, size, max_data)))
    return c


def shm_client(slots=4):
    """A client-side decoder after a handshake with SHM."""
    c = p.Decoder(p.CLIENT, map_shm=ram_region)
    c.sending(p.Hello(p.F_ALL, MiB, 65536, slots))
    c.feed(p.encode(p.HelloReply(p.F_ALL, 0, 65536)))
    c.sending(p.ShmSetup(slots, 65536))
    return c


def with_lower(op, length=4, flags=0):
    """A device decoder with LOWER_REQUEST handle 1 outstanding."""
    def make():
        d = ready_device()
        d.sending(p.LowerRequest(1, op, 0, length, flags,
                                 bytes(length) if op == p.OP_WRITE else b''))
        return d
    return make


def with_request(op, length=4, lower_size=MiB, size=0, offered=p.F_ALL):
    """A client decoder with REQUEST handle 1 outstanding."""
    def make():
        c = ready_client(F_NOSHM & offered, lower_size, size,
                         offered=offered)
        c.sending(p.Request(1, op, 0, length, 0,
                            bytes(length) if op == p.OP_WRITE else b''))
        return c
    return make


def with_shm_request(op, length=4):
    """A client decoder with SHM and REQUEST handle 1 (slot 1)
    outstanding."""
    def make():
        c = shm_client()
        c.sending(p.Request(1, op, 0, length, 0,
                            bytes(length) if op == p.OP_WRITE else b'',
                            slot=1))
        return c
    return make


def _hello_sent(features=F_NOSHM, lower_size=MiB):
    """A client decoder that has sent HELLO."""
    c = p.Decoder(p.CLIENT)
    c.sending(p.Hello(features, lower_size, 65536))
    return c


def req(op, offset=0, length=0, flags=0, handle=1, data=b'', t=p.TYPE_REQUEST,
        slot=0, hflags=0):
    return raw(t, request_payload(op, offset, length, flags, slot, data),
               handle, flags=hflags)


class RoundTripTest(unittest.TestCase):
    def transfer(self, sender, receiver, msg):
        wire = sender.sending(msg)
        self.assertEqual(wire, p.encode(msg))
        self.assertEqual(receiver.feed(wire), [msg])

    def test_every_message_type(self):
        dev, cli = p.Decoder(p.DEVICE), p.Decoder(p.CLIENT)
        self.transfer(cli, dev, p.Hello(p.F_ALL, 1 << 32, 1 << 17))
        self.transfer(dev, cli, p.HelloReply(p.F_FLUSH | p.F_LOWER | p.F_FUA,
                                             4 * MiB, 65536))
        self.assertEqual((dev.size, dev.lower_size, dev.max_data),
                         (4 * MiB, 1 << 32, 65536))
        self.assertEqual((cli.size, cli.features), (4 * MiB, 0x19))
        self.transfer(cli, dev, p.Request(5, p.OP_WRITE, 512, 3, p.REQ_FUA,
                                          b'abc'))
        self.transfer(cli, dev, p.Request(6, p.OP_READ, 4 * MiB - 2, 2))
        self.transfer(cli, dev, p.Request(7, p.OP_FLUSH))
        self.transfer(dev, cli, p.LowerRequest(5, p.OP_READ, (1 << 32) - 9, 9))
        self.transfer(dev, cli, p.LowerRequest(6, p.OP_WRITE_ZEROES, 0,
                                               1 << 31, p.REQ_MAY_UNMAP))
        self.transfer(cli, dev, p.LowerReply(5, 0, b'123456789'))
        self.transfer(cli, dev, p.LowerReply(6, -errno.ENOSPC))
        self.transfer(dev, cli, p.Reply(6, 0, p.ACTION_COMPLETE, 0, b'xy'))
        self.transfer(dev, cli, p.Reply(5, 0, p.ACTION_FORWARD, 4096, b'ABC'))
        self.transfer(dev, cli, p.Reply(7, -errno.EIO))
        self.assertEqual((dev.requests, cli.requests, dev.lower_requests,
                          cli.lower_requests), ({}, {}, {}, {}))

    def test_layout(self):
        wire = p.encode(p.Request(0x1122334455667788, p.OP_WRITE, 0x200, 2,
                                  p.REQ_FUA, b'hi'))
        self.assertEqual(wire[:4], b'SDTP')
        self.assertEqual(len(wire), 24 + 24 + 2)
        self.assertEqual(wire[4:6], b'\x10\x00')                 # type 16
        self.assertEqual(wire[8:16], bytes.fromhex('8877665544332211'))
        self.assertEqual(wire[16:20], (26).to_bytes(4, 'little'))
        self.assertEqual(wire[24:28], b'\x01\x00\x01\x00')        # op, FUA
        self.assertEqual(wire[-2:], b'hi')
        self.assertEqual(len(p.encode(p.Hello(0, 0))), 24 + 40)
        self.assertEqual(len(p.encode(p.HelloReply(0, 1, 1))), 24 + 32)
        self.assertEqual(len(p.encode(p.LowerReply(1))), 24 + 16)
        self.assertEqual(p.encode(p.Reply(1, -5))[24:28],
                         (-5).to_bytes(4, 'little', signed=True))
        # version 1 final: max_inflight, SHM_SETUP, slot, REPLAY
        wire = p.encode(p.Hello(0, 0, 65536, 300))
        self.assertEqual(wire[24 + 28:24 + 32], (300).to_bytes(4, 'little'))
        self.assertEqual(wire[24 + 32:], bytes(8))
        wire = p.encode(p.HelloReply(0, 1, 65536, 7))
        self.assertEqual(wire[24 + 28:], (7).to_bytes(4, 'little'))
        wire = p.encode(p.ShmSetup(64, 1 << 20))
        self.assertEqual(wire[4:6], b'\x03\x00')
        self.assertEqual(wire[16:20], (16).to_bytes(4, 'little'))
        self.assertEqual(wire[24:], (64).to_bytes(4, 'little') +
                         (1 << 20).to_bytes(4, 'little') + bytes(8))
        wire = p.encode(p.Request(1, p.OP_WRITE, 0, 2, 0, b'hi', slot=9,
                                  replay=True), shm=True)
        self.assertEqual(wire[6:8], b'\x01\x00')                 # REPLAY
        self.assertEqual(wire[16:20], (24).to_bytes(4, 'little'))  # no data
        self.assertEqual(wire[28:32], (9).to_bytes(4, 'little'))   # slot
        wire = p.encode(p.Reply(1, 0, data=b'abc'), shm=True)
        self.assertEqual(len(wire), 48)
        self.assertEqual(wire[40:48], (3).to_bytes(8, 'little'))   # bytes
        wire = p.encode(p.LowerReply(1, 0, b'abc'), shm=True)     # inline
        self.assertEqual(wire[-3:], b'abc')

    def test_shared_memory(self):
        """Data moves through the slots; LOWER_* stay inline."""
        region = bytearray(4 * 65536)
        dev = p.Decoder(p.DEVICE, map_shm=lambda setup: region)
        cli = p.Decoder(p.CLIENT, map_shm=lambda setup: region)
        self.transfer(cli, dev, p.Hello(p.F_ALL, MiB, 65536, 8))
        self.transfer(dev, cli, p.HelloReply(p.F_ALL, 0, 65536, 4))
        self.assertEqual((dev.max_inflight, cli.max_inflight), (4, 4))
        self.assertFalse(dev.complete)
        self.transfer(cli, dev, p.ShmSetup(4, 65536))
        self.assertTrue(dev.complete and cli.complete)
        msg = p.Request(5, p.OP_WRITE, 512, 3, 0, b'abc', slot=2)
        wire = cli.sending(msg)
        self.assertEqual(len(wire), 48)
        self.assertEqual(region[2 * 65536:2 * 65536 + 3], b'abc')
        self.assertEqual(dev.feed(wire), [msg])
        self.transfer(cli, dev, p.Request(6, p.OP_READ, 0, 4, slot=0,
                                          replay=True))
        self.transfer(dev, cli, p.LowerRequest(1, p.OP_WRITE, 0, 2, 0,
                                               b'lo'))
        self.transfer(cli, dev, p.LowerReply(1))
        msg = p.Reply(6, 0, data=b'read')
        wire = dev.sending(msg)
        self.assertEqual(len(wire), 48)
        self.assertEqual(region[:4], b'read')
        self.assertEqual(cli.feed(wire), [msg])
        msg = p.Reply(5, 0, p.ACTION_FORWARD, 4096, b'ABC')
        wire = dev.sending(msg)
        self.assertEqual(region[2 * 65536:2 * 65536 + 3], b'ABC')
        self.assertEqual(cli.feed(wire), [msg])
        # slot 2 is free again, and may be reused
        self.transfer(cli, dev, p.Request(7, p.OP_FLUSH, slot=2))
        self.assertEqual((dev.requests.keys(), cli.requests.keys()),
                         ({7}, {7}))

    def test_unknown_offered_features_are_ignored(self):
        dev, cli = p.Decoder(p.DEVICE), p.Decoder(p.CLIENT)
        future = 1 << 40 | 1 << 6
        self.transfer(cli, dev, p.Hello(p.F_FLUSH | future, MiB))
        self.transfer(dev, cli, p.HelloReply(p.F_FLUSH, 4096, 65536))
        # accepting a bit that was not offered is still an error
        dev = p.Decoder(p.DEVICE)
        dev.feed(p.encode(p.Hello(p.F_FLUSH, MiB)))
        with self.assertRaisesRegex(p.ProtocolError, 'not offered'):
            dev.sending(p.HelloReply(p.F_FLUSH | p.F_DISCARD, 0, 65536))

    def test_forward_legal_iff_lower_offered(self):
        # LOWER offered (even for an empty node below) but not accepted
        dev = p.Decoder(p.DEVICE)
        dev.feed(p.encode(p.Hello(p.F_LOWER, 0)))
        dev.sending(p.HelloReply(0, 4096, 65536))
        self.assertTrue(dev.has_lower)
        dev.feed(p.encode(p.Request(1, p.OP_WRITE, 0, 1, 0, b'x')))
        with self.assertRaisesRegex(p.ProtocolError, 'exceeds the lower '
                                    'node size 0'):
            dev.sending(p.Reply(1, 0, p.ACTION_FORWARD))
        dev = p.Decoder(p.DEVICE)
        dev.feed(p.encode(p.Hello(p.F_FLUSH, 1 << 20)))     # no LOWER
        dev.sending(p.HelloReply(p.F_FLUSH, 4096, 65536))
        self.assertEqual((dev.has_lower, dev.lower_size), (False, 0))
        dev.feed(p.encode(p.Request(1, p.OP_FLUSH)))
        with self.assertRaisesRegex(p.ProtocolError, 'no node below'):
            dev.sending(p.Reply(1, 0, p.ACTION_FORWARD))
        dev.sending(p.Reply(1, 0))

    def test_incremental_and_batched(self):
        msgs = [p.Request(h, p.OP_WRITE, h * 10, 5, 0, b'%05d' % h)
                for h in range(1, 20)]
        stream = b''.join(map(p.encode, msgs))
        d = ready_device()
        out = []
        for i in range(len(stream)):                    # byte by byte
            out += d.feed(stream[i:i + 1])
        self.assertEqual(out, msgs)
        d = ready_device()
        self.assertEqual(d.feed(stream), msgs)          # all at once

    def test_handle_reusable_after_reply(self):
        d = ready_device()
        d.feed(req(p.OP_READ, 0, 4, handle=3))
        d.sending(p.Reply(3, -5))
        self.assertEqual(len(d.feed(req(p.OP_READ, 0, 4, handle=3))), 1)

    def test_sending_checks_without_recording(self):
        d = ready_device()
        d.feed(req(p.OP_READ, 0, 4, handle=3))
        with self.assertRaisesRegex(p.ProtocolError, 'must be 4'):
            d.sending(p.Reply(3, 0, data=b'abc'))
        self.assertIn(3, d.requests)
        d.sending(p.Reply(3, 0, data=b'abcd'))
        self.assertNotIn(3, d.requests)
        with self.assertRaisesRegex(p.ProtocolError, 'cannot encode'):
            d.sending(p.LowerRequest(-1, p.OP_FLUSH))

    def test_decoder_stays_failed(self):
        d = fresh_device()
        with self.assertRaises(p.ProtocolError):
            d.feed(b'X' * 24)
        with self.assertRaisesRegex(p.ProtocolError, 'already failed'):
            d.feed(p.encode(p.Hello(0, MiB)))


# Each case: decoder factory, bytes fed to it, regex of the ProtocolError.
DEVICE_CASES = {
    'bad_magic': (fresh_device, raw(1, hello_payload(), magic=0x50544454),
                  'bad magic 0x50544454'),
    'header_flags': (fresh_device, raw(1, hello_payload(), flags=1),
                     'header flags must be 0'),
    'header_reserved': (fresh_device, raw(1, hello_payload(), reserved=9),
                        'header reserved field must be 0'),
    'unknown_type': (fresh_device, raw(99, b''), 'unknown message type 99'),
    'reply_from_client': (ready_device, raw(p.TYPE_REPLY, rpl_payload()),
                          'REPLY is sent by the device, not the client'),
    'request_before_hello': (fresh_device, req(p.OP_READ, 0, 1),
                             'REQUEST before HELLO'),
    'oversize_before_handshake': (fresh_device, raw(1, length=4097),
                                  'length 4097 exceeds 4096 before'),
    'hello_short': (fresh_device, raw(1, hello_payload()[:39]),
                    'HELLO payload is 39 bytes, must be 40'),
    'hello_long': (fresh_device, raw(1, hello_payload() + b'\0'),
                   'HELLO payload is 41 bytes, must be 40'),
    'hello_version': (fresh_device, raw(1, hello_payload(version=2)),
                      'HELLO version 2'),
    'hello_class': (fresh_device, raw(1, hello_payload(cls=2)),
                    'device class 2 is not 1'),
    'hello_max_data': (fresh_device, raw(1, hello_payload(max_data=65535)),
                       'max_data 65535 is not 65536 to 16777216'),
    'hello_max_data_big': (fresh_device,
                           raw(1, hello_payload(max_data=(16 << 20) + 1)),
                           'max_data 16777217 is not 65536 to 16777216'),
    'hello_max_inflight_0': (fresh_device,
                             raw(1, hello_payload(max_inflight=0)),
                             'HELLO max_inflight 0 is not 1 to 1024'),
    'hello_max_inflight_big': (fresh_device,
                               raw(1, hello_payload(max_inflight=1025)),
                               'HELLO max_inflight 1025 is not 1 to 1024'),
    'hello_reserved': (fresh_device, raw(1, hello_payload(r1=1)),
                       'HELLO reserved field must be 0'),
    'hello_handle': (fresh_device, raw(1, hello_payload(), handle=4),
                     'HELLO handle must be 0'),
    'request_before_hello_reply': (fresh_device, raw(1, hello_payload()) +
                                   req(p.OP_READ, 0, 1),
                                   'REQUEST before the handshake is '
                                   'complete'),
    'second_hello': (ready_device, raw(1, hello_payload()), 'second HELLO'),
    'oversize_after_handshake': (ready_device,
                                 raw(16, length=65536 + 24 + 1),
                                 r'exceeds max_data 65536 \+ 24'),
    'request_short': (ready_device, raw(16, request_payload(0)[:23]),
                      'REQUEST payload is 23 bytes, shorter than its '
                      '24-byte fixed part'),
    'request_slot_without_shm': (ready_device, req(p.OP_READ, 0, 1, slot=1),
                                 'REQUEST slot field must be 0 without '
                                 'SOFTDEV_TAP_F_SHM, not 1'),
    'request_header_flags': (ready_device, req(p.OP_READ, 0, 1, hflags=2),
                             'REQUEST header flags 0x2 have bits other '
                             'than REPLAY'),
    'replay_on_lower_reply': (with_lower(p.OP_FLUSH, 0),
                              raw(33, lreply_payload(), handle=1, flags=1),
                              'LOWER_REPLY header flags must be 0, not '
                              '0x1'),
    'over_max_inflight': (lambda: ready_device(max_inflight=2),
                          req(p.OP_READ, 0, 1, handle=1) +
                          req(p.OP_READ, 0, 1, handle=2) +
                          req(p.OP_READ, 0, 1, handle=3),
                          'REQUEST handle 3 exceeds max_inflight 2'),
    'unknown_op': (ready_device, req(5, 0, 1), 'unknown op 5'),
    'req_flags': (ready_device, req(p.OP_WRITE, 0, 1, flags=8, data=b'x'),
                  'req_flags 0x8 has undefined bits'),
    'below_not_negotiated': (ready_device, req(p.OP_READ, 0, 1,
                                               flags=p.REQ_BELOW),
                             'BELOW but SOFTDEV_TAP_F_READ_BELOW was not'),
    'fua_not_negotiated': (lambda: ready_device(F_NOSHM & ~p.F_FUA),
                           req(p.OP_WRITE, 0, 1, p.REQ_FUA, data=b'x'),
                           'FUA but SOFTDEV_TAP_F_FUA was not negotiated'),
    'op_not_negotiated': (lambda: ready_device(p.F_LOWER),
                          req(p.OP_FLUSH),
                          'FLUSH but SOFTDEV_TAP_F_FLUSH was not'),
    'read_zero_bytes': (ready_device, req(p.OP_READ, 0, 0),
                        'READ of 0 bytes: must be 1 to max_data 65536'),
    'read_over_max_data': (ready_device, req(p.OP_READ, 0, 65537),
                           'READ of 65537 bytes: must be 1 to max_data'),
    'write_over_negotiated_max_data': (
        lambda: ready_device(offered_max=1 << 20),
        req(p.OP_WRITE, 0, 65537, data=bytes(65537)),
        r'exceeds max_data 65536 \+ 24'),
    'write_data_size': (ready_device, req(p.OP_WRITE, 0, 10, data=bytes(9)),
                        'WRITE carries 9 data bytes, must be 10'),
    'read_with_data': (ready_device, req(p.OP_READ, 0, 4, data=b'abcd'),
                       'READ carries 4 data bytes, must be 0'),
    'discard_with_data': (ready_device, req(p.OP_DISCARD, 0, 1, data=b'a'),
                          'DISCARD carries 1 data bytes, must be 0'),
    'flush_offset': (ready_device, req(p.OP_FLUSH, 512, 0),
                     'FLUSH must have offset, bytes and req_flags 0'),
    'flush_bytes': (ready_device, req(p.OP_FLUSH, 0, 512),
                    'FLUSH must have offset, bytes and req_flags 0'),
    'flush_flags': (ready_device, req(p.OP_FLUSH, 0, 0, p.REQ_FUA),
                    'FLUSH must have offset, bytes and req_flags 0'),
    'discard_over_2g': (lambda: ready_device(size=1 << 40),
                        req(p.OP_DISCARD, 0, (1 << 31) + 1),
                        r'more than 2\^31'),
    'beyond_lower_size': (ready_device, req(p.OP_READ, MiB - 1, 2),
                          'READ at 1048575\\+2 exceeds the device size '
                          '1048576'),
    'beyond_device_size': (lambda: ready_device(size=8192),
                           req(p.OP_WRITE_ZEROES, 4096, 4097),
                           'exceeds the device size 8192'),
    'huge_offset': (ready_device, req(p.OP_DISCARD, (1 << 64) - 1, 1),
                    'exceeds the device size'),
    'duplicate_handle': (ready_device, req(p.OP_READ, 0, 1, handle=7) +
                         req(p.OP_READ, 8, 1, handle=7),
                         'REQUEST handle 7 is already outstanding'),
    'lower_reply_unknown': (ready_device,
                            raw(33, lreply_payload(), handle=9),
                            'LOWER_REPLY to handle 9, which is not an '
                            'outstanding LOWER_REQUEST'),
    'lower_reply_positive': (with_lower(p.OP_FLUSH, 0),
                             raw(33, lreply_payload(5), handle=1),
                             'result must be 0 or a negative errno '
                             r'\(-1 to -4095\), not 5'),
    'lower_reply_result_range': (with_lower(p.OP_FLUSH, 0),
                                 raw(33, lreply_payload(-4096), handle=1),
                                 'LOWER_REPLY result must be 0 or a '
                                 'negative errno'),
    'lower_reply_reserved': (with_lower(p.OP_FLUSH, 0),
                             raw(33, lreply_payload(reserved=1), handle=1),
                             'LOWER_REPLY reserved field must be 0'),
    'lower_reply_bytes_field': (with_lower(p.OP_READ),
                                raw(33, lreply_payload(nbytes=4,
                                                       data=b'abc'),
                                    handle=1),
                                'bytes field says 4 but 3 data bytes'),
    'lower_reply_read_size': (with_lower(p.OP_READ),
                              raw(33, lreply_payload(data=b'abc'), handle=1),
                              'LOWER_REPLY to a READ with result 0 carries '
                              '3 data bytes, must be 4'),
    'lower_reply_error_with_data': (with_lower(p.OP_READ),
                                    raw(33, lreply_payload(-5, data=b'abcd'),
                                        handle=1),
                                    'result -5 carries 4 data bytes, must '
                                    'be 0'),
    'lower_reply_write_with_data': (with_lower(p.OP_WRITE),
                                    raw(33, lreply_payload(data=b'abcd'),
                                        handle=1),
                                    'LOWER_REPLY to a WRITE with result 0 '
                                    'carries 4'),
    # shared memory
    'shm_setup_before_hello': (fresh_device, raw(3, shm_payload()),
                               'SHM_SETUP before HELLO'),
    'shm_setup_before_hello_reply': (fresh_device,
                                     raw(1, hello_payload()) +
                                     raw(3, shm_payload()),
                                     'SHM_SETUP before the handshake is '
                                     'complete'),
    'shm_setup_not_negotiated': (ready_device, raw(3, shm_payload()),
                                 'SHM_SETUP but SOFTDEV_TAP_F_SHM was not '
                                 'negotiated'),
    'shm_setup_slots': (shm_pending, raw(3, shm_payload(slots=8)),
                        'SHM_SETUP geometry 8 slots of 65536 bytes differs '
                        'from the handshake: max_inflight 4, max_data '
                        '65536'),
    'shm_setup_slot_size': (shm_pending, raw(3, shm_payload(slot_size=4096)),
                            'geometry 4 slots of 4096 bytes differs'),
    'shm_setup_reserved': (shm_pending, raw(3, shm_payload(r1=1)),
                           'SHM_SETUP reserved field must be 0'),
    # the Python device declines rings, so ring_entries must be 0
    'shm_setup_rings': (shm_pending, raw(3, shm_payload(ring_entries=4)),
                        'SHM_SETUP reserved field must be 0'),
    'kick_without_rings': (ready_device, raw(4, b''),
                           'KICK but SOFTDEV_TAP_F_RING was not negotiated'),
    'shm_setup_short': (shm_pending, raw(3, shm_payload()[:15]),
                        'SHM_SETUP payload is 15 bytes, must be 16'),
    'shm_setup_handle': (shm_pending, raw(3, shm_payload(), handle=1),
                         'SHM_SETUP handle must be 0'),
    'shm_setup_no_map': (lambda: ready_device(p.F_ALL, max_inflight=4),
                         raw(3, shm_payload()),
                         'SHM_SETUP but this decoder has no map_shm'),
    'request_before_shm_setup': (shm_pending, req(p.OP_READ, 0, 1),
                                 'REQUEST before SHM_SETUP'),
    'second_shm_setup': (shm_device, raw(3, shm_payload()),
                         'second SHM_SETUP'),
    'shm_slot_out_of_range': (shm_device, req(p.OP_READ, 0, 1, slot=4),
                              r'REQUEST slot 4 out of range \(4 slots\)'),
    'shm_slot_in_use': (shm_device,
                        req(p.OP_READ, 0, 1, handle=1, slot=2) +
                        req(p.OP_READ, 0, 1, handle=2, slot=2),
                        'REQUEST handle 2 uses slot 2, which outstanding '
                        'handle 1 uses'),
    'shm_inline_write_data': (shm_device,
                              req(p.OP_WRITE, 0, 4, data=b'abcd'),
                              'REQUEST carries 4 inline data bytes; with '
                              'SOFTDEV_TAP_F_SHM its data is in the slot'),
}

CLIENT_CASES = {
    'hello_reply_before_hello': (lambda: p.Decoder(p.CLIENT),
                                 raw(2, reply_payload()),
                                 'HELLO_REPLY before HELLO'),
    'hello_from_device': (ready_client, raw(1, hello_payload()),
                          'HELLO is sent by the client, not the device'),
    'hello_reply_unoffered_feature': (
        lambda: _hello_sent(features=p.F_FLUSH),
        raw(2, reply_payload(features=p.F_FLUSH | p.F_DISCARD)),
        'feature bits 0x2 that were not offered'),
    'hello_reply_class': (lambda: _hello_sent(),
                          raw(2, reply_payload(cls=2)),
                          "device class 2 differs from the client's 1"),
    'hello_reply_version': (lambda: _hello_sent(),
                            raw(2, reply_payload(version=3)),
                            'HELLO_REPLY version 3'),
    'hello_reply_max_data_big': (lambda: _hello_sent(),
                                 raw(2, reply_payload(max_data=65537)),
                                 'max_data 65537 is not 65536 to the '
                                 'offered 65536'),
    'hello_reply_max_data_small': (lambda: _hello_sent(),
                                   raw(2, reply_payload(max_data=65535)),
                                   'max_data 65535 is not 65536 to'),
    'hello_reply_size_without_lower': (
        lambda: _hello_sent(F_NOSHM & ~p.F_LOWER, lower_size=0),
        raw(2, reply_payload(size=0)), 'no node below'),
    'hello_reply_short': (lambda: _hello_sent(),
                          raw(2, reply_payload()[:31]),
                          'HELLO_REPLY payload is 31 bytes, must be 32'),
    'hello_reply_max_inflight': (lambda: _hello_sent(),
                                 raw(2, reply_payload(max_inflight=65)),
                                 'HELLO_REPLY max_inflight 65 exceeds the '
                                 'offered 64'),
    'hello_reply_flags': (lambda: _hello_sent(),
                          raw(2, reply_payload(), flags=1),
                          'HELLO_REPLY header flags must be 0'),
    'hello_reply_handle': (lambda: _hello_sent(),
                           raw(2, reply_payload(), handle=1),
                           'HELLO_REPLY handle must be 0'),
    'second_hello_reply': (ready_client, raw(2, reply_payload()),
                           'second HELLO_REPLY'),
    'request_from_device': (ready_client, req(p.OP_READ, 0, 1),
                            'REQUEST is sent by the client'),
    'reply_unknown_handle': (ready_client, raw(17, rpl_payload(), handle=3),
                             'REPLY to handle 3, which is not an '
                             'outstanding REQUEST'),
    'reply_positive_result': (with_request(p.OP_READ),
                              raw(17, rpl_payload(1), handle=1),
                              'REPLY result must be 0 or a negative errno'),
    'reply_result_range': (with_request(p.OP_READ),
                           raw(17, rpl_payload(-(1 << 31)), handle=1),
                           'not -2147483648'),
    'complete_with_offset': (with_request(p.OP_WRITE),
                             raw(17, rpl_payload(offset=4096), handle=1),
                             'COMPLETE must have offset 0, not 4096'),
    'reply_unknown_action': (with_request(p.OP_FLUSH, 0),
                             raw(17, rpl_payload(action=2), handle=1),
                             'unknown action 2'),
    'reply_bytes_field': (with_request(p.OP_READ),
                          raw(17, rpl_payload(nbytes=5, data=b'abcd'),
                              handle=1),
                          'REPLY bytes field says 5 but 4 data bytes'),
    'oversize_reply': (ready_client, raw(17, length=65536 + 25),
                       r'exceeds max_data 65536 \+ 24'),
    'complete_read_size': (with_request(p.OP_READ),
                           raw(17, rpl_payload(data=b'abc'), handle=1),
                           'COMPLETE of a READ with result 0 carries 3 data '
                           'bytes, must be 4'),
    'complete_error_with_data': (with_request(p.OP_READ),
                                 raw(17, rpl_payload(-5, data=b'abcd'),
                                     handle=1),
                                 'result -5 carries 4 data bytes, must be 0'),
    'complete_write_with_data': (with_request(p.OP_WRITE),
                                 raw(17, rpl_payload(data=b'abcd'),
                                     handle=1),
                                 'COMPLETE of a WRITE with result 0 carries '
                                 '4'),
    'forward_with_result': (with_request(p.OP_READ),
                            raw(17, rpl_payload(-5, 1), handle=1),
                            'FORWARD result must be 0, not -5'),
    'forward_without_lower': (with_request(p.OP_READ, lower_size=0,
                                           size=4096,
                                           offered=F_NOSHM & ~p.F_LOWER),
                              raw(17, rpl_payload(0, 1), handle=1),
                              'FORWARD but there is no node below'),
    'forward_read_with_data': (with_request(p.OP_READ),
                               raw(17, rpl_payload(0, 1, data=b'abcd'),
                                   handle=1),
                               'FORWARD of a READ carries 4 data bytes'),
    'forward_write_data_size': (with_request(p.OP_WRITE),
                                raw(17, rpl_payload(0, 1, data=b'abc'),
                                    handle=1),
                                'FORWARD of a WRITE carries 3 data bytes'),
    'forward_beyond_lower': (with_request(p.OP_READ),
                             raw(17, rpl_payload(0, 1, MiB - 3), handle=1),
                             'FORWARD of a READ to 1048573\\+4 exceeds the '
                             'lower node size 1048576'),
    'forward_flush_offset': (with_request(p.OP_FLUSH, 0),
                             raw(17, rpl_payload(0, 1, 512), handle=1),
                             'FORWARD of a FLUSH must have offset 0'),
    'lower_request_not_negotiated': (lambda: ready_client(p.F_FLUSH),
                                     req(p.OP_READ, 0, 1, t=32),
                                     'SOFTDEV_TAP_F_LOWER was not '
                                     'negotiated'),
    'lower_request_beyond_lower': (lambda: ready_client(size=4 * MiB),
                                   req(p.OP_READ, MiB, 1, t=32),
                                   'exceeds the lower node size 1048576'),
    'lower_request_unknown_op': (ready_client, req(9, 0, 1, t=32),
                                 'LOWER_REQUEST has unknown op 9'),
    'lower_request_duplicate': (ready_client,
                                req(p.OP_READ, 0, 1, t=32) +
                                req(p.OP_FLUSH, t=32),
                                'LOWER_REQUEST handle 1 is already '
                                'outstanding'),
    'lower_request_replay': (ready_client, req(p.OP_READ, 0, 1, t=32,
                                               hflags=1),
                             'LOWER_REQUEST header flags must be 0'),
    'lower_request_slot': (ready_client, req(p.OP_READ, 0, 1, t=32, slot=1),
                           'LOWER_REQUEST slot field must be 0, not 1'),
    'shm_setup_from_device': (ready_client, raw(3, shm_payload()),
                              'SHM_SETUP is sent by the client'),
    'shm_reply_inline_data': (with_shm_request(p.OP_READ),
                              raw(17, rpl_payload(data=b'abcd'), handle=1),
                              'REPLY carries 4 inline data bytes'),
    'shm_reply_bytes_over_slot': (with_shm_request(p.OP_DISCARD),
                                  raw(17, rpl_payload(nbytes=65537),
                                      handle=1),
                                  'REPLY bytes field says 65537, more than '
                                  'the slot size 65536'),
    'shm_reply_bytes_wrong': (with_shm_request(p.OP_READ),
                              raw(17, rpl_payload(nbytes=3), handle=1),
                              'COMPLETE of a READ with result 0 carries 3 '
                              'data bytes, must be 4'),
}


class ValidationTest(unittest.TestCase):
    """One test per rule; generated from DEVICE_CASES and CLIENT_CASES."""

    def check_rejected(self, make, data, regex):
        with self.assertRaisesRegex(p.ProtocolError, regex):
            make().feed(data)

    def test_valid_inputs_of_the_cases_pass(self):
        # The rules are not vacuous: near-identical input is accepted.
        self.assertEqual(len(ready_device().feed(req(p.OP_READ, MiB - 1,
                                                     1))), 1)
        self.assertEqual(len(with_lower(p.OP_READ)().feed(
            raw(33, lreply_payload(data=b'abcd'), handle=1))), 1)
        self.assertEqual(len(with_request(p.OP_WRITE)().feed(
            raw(17, rpl_payload(0, 1, MiB - 4, data=b'abcd'), handle=1))), 1)
        self.assertEqual(len(ready_device(size=1 << 40).feed(
            req(p.OP_DISCARD, 0, 1 << 31))), 1)
        self.assertEqual(len(ready_device(F_NOSHM & ~p.F_FUA).feed(
            req(p.OP_WRITE_ZEROES, 0, 9, p.REQ_MAY_UNMAP))), 1)


def _add_cases(prefix, cases):
    for name, (make, data, regex) in cases.items():
        def test(self, make=make, data=data, regex=regex):
            self.check_rejected(make, data, regex)
        setattr(ValidationTest, f'test_{prefix}_rejects_{name}', test)


_add_cases('device', DEVICE_CASES)
_add_cases('client', CLIENT_CASES)


class FuzzTest(unittest.TestCase):
    """Arbitrary input only ever raises ProtocolError (bounded, seeded)."""

    def feed_all(self, make, inputs):
        for data in inputs:
            d = make()
            try:
                d.feed(data)
                d.feed(data)
            except p.ProtocolError:
                pass

    def test_random_bytes(self):
        rng = random.Random(1)
        inputs = [rng.randbytes(rng.randrange(0, 300)) for _ in range(200)]
        for make in (fresh_device, ready_device, lambda: _hello_sent(),
                     ready_client):
            self.feed_all(make, inputs)

    def test_random_headers(self):
        # Valid magic, random rest: reaches the payload checks.
        rng = random.Random(2)
        types = list(p.TYPE_NAMES)
        inputs = []
        for _ in range(200):
            payload = rng.randbytes(rng.choice([16, 24, 32, 40, 48, 70]))
            inputs.append(raw(rng.choice(types), payload,
                              rng.choice([0, 1, 2, 7])))
        for make in (fresh_device, ready_device, with_lower(p.OP_READ),
                     ready_client, with_request(p.OP_WRITE), shm_pending,
                     shm_device, with_shm_request(p.OP_READ)):
            self.feed_all(make, inputs)

    def test_mutated_valid_stream(self):
        rng = random.Random(3)
        stream = b''.join([
            req(p.OP_WRITE, 0, 8, p.REQ_FUA, 1, b'abcdefgh'),
            req(p.OP_READ, 4096, 512, 0, 2), req(p.OP_FLUSH, handle=3),
            req(p.OP_WRITE_ZEROES, 0, 1 << 20, p.REQ_MAY_UNMAP, 4),
            raw(33, lreply_payload(data=b'abcd'), handle=1)])
        inputs = []
        for _ in range(200):
            data = bytearray(stream)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            inputs.append(bytes(data))
        self.feed_all(with_lower(p.OP_READ), inputs)

    def test_mutated_shm_stream(self):
        rng = random.Random(4)
        stream = b''.join([
            req(p.OP_WRITE, 0, 8, p.REQ_FUA, 1, slot=0),
            req(p.OP_READ, 4096, 512, 0, 2, slot=1, hflags=p.FLAG_REPLAY),
            req(p.OP_FLUSH, handle=3, slot=2),
            req(p.OP_WRITE, 65536 * 3, 65536, handle=4, slot=3)])
        self.assertEqual(len(shm_device().feed(stream)), 4)
        inputs = []
        for _ in range(200):
            data = bytearray(stream)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            inputs.append(bytes(data))
        self.feed_all(shm_device, inputs)


# -- devices driven by TestClient over a socketpair ------------------------

class DeviceTestCase(unittest.TestCase):
    """Runs each device on one half of a socketpair.  Subclasses with shm
    = True offer SOFTDEV_TAP_F_SHM, and check that the device took it."""

    shm = False

    def start(self, device, lower=None, **handshake):
        ours, theirs = socket.socketpair()
        thread = threading.Thread(target=serve, args=(device, theirs),
                                  daemon=True)
        thread.start()
        client = TestClient(ours, lower=lower, shm=self.shm)
        self.addCleanup(self.stop, client, thread)
        client.handshake(**handshake)
        self.assertEqual(client.shm_active, self.shm and device.shm)
        return client

    def stop(self, client, thread):
        client.close()
        thread.join(5)
        self.assertFalse(thread.is_alive())

    @staticmethod
    def ops(client):
        """The negotiated feature bits but SHM."""
        return client.features & ~p.F_SHM


class ExampleDeviceTest(DeviceTestCase):
    def test_passthrough(self):
        lower = bytearray(os.urandom(MiB))
        model = bytearray(lower)
        c = self.start(Passthrough(), lower)
        # Overrides nothing: discards and write-zeroes are forwarded too
        self.assertEqual(self.ops(c), p.F_LOWER | p.F_DISCARD | p.F_ZEROES)
        self.assertEqual(c.size, MiB)
        rng = random.Random(4)
        for _ in range(20):
            off, n = rng.randrange(MiB - 65536), rng.randrange(1, 65537)
            data = rng.randbytes(n)
            self.assertEqual(c.write(off, data), (0, b''))
            model[off:off + n] = data
            self.assertEqual(c.read(off, n), (0, data))
        self.assertEqual(lower, model)
        replies = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual({m.action for m in replies}, {p.ACTION_FORWARD})
        # Discards and write-zeroes are forwarded as they are; FLUSH,
        # not negotiated, goes below without reaching the device.
        c.lower_ops.clear()
        self.assertEqual(c.discard(0, 4096), (0, b''))
        self.assertEqual(c.write_zeroes(4096, 4096), (0, b''))
        self.assertEqual(c.flush(), (0, b''))
        self.assertEqual(lower[4096:8192], bytes(4096))
        self.assertEqual([op for op, _, _, _ in c.lower_ops],
                         [p.OP_DISCARD, p.OP_WRITE_ZEROES, p.OP_FLUSH])
        self.assertEqual(len([m for m in c.received
                              if isinstance(m, p.Reply)]), len(replies) + 2)
        c.verify_io(MiB, seed=1)
        self.assertEqual(bytes(lower), bytes(c.lower))

    def test_ramdisk(self):
        c = self.start(RamDisk(size='1M'))
        self.assertEqual(self.ops(c), p.F_FLUSH | p.F_DISCARD | p.F_ZEROES |
                         p.F_FUA)
        self.assertEqual((c.hello_reply.size, c.size), (MiB, MiB))
        self.assertEqual(c.read(0, 4), (0, bytes(4)))
        self.assertEqual(c.write(100, b'hello', fua=True), (0, b''))
        self.assertEqual(c.write(MiB - 3, b'end'), (0, b''))
        self.assertEqual(c.read(98, 9), (0, b'\0\0hello\0\0'))
        self.assertEqual(c.read(MiB - 3, 3), (0, b'end'))
        self.assertEqual(c.write_zeroes(101, 2), (0, b''))
        self.assertEqual(c.read(100, 5), (0, b'h\0\0lo'))
        self.assertEqual(c.discard(100, 5), (0, b''))
        self.assertEqual(c.read(100, 5), (0, bytes(5)))
        self.assertEqual(c.flush(), (0, b''))
        self.assertFalse(any(isinstance(m, p.LowerRequest)
                             for m in c.received))
        c.verify_io(seed=2)
        with self.assertRaisesRegex(p.ProtocolError, 'exceeds the device'):
            c.read(MiB - 3, 4)          # the client side checks too

    def test_xor(self):
        lower = bytearray(MiB)
        c = self.start(Xor(key='0x5a'), lower)
        self.assertEqual(self.ops(c), p.F_ZEROES | p.F_FUA | p.F_LOWER |
                         p.F_DISCARD)           # discard_passes
        data = os.urandom(65536)
        self.assertEqual(c.write(4096, data), (0, b''))
        self.assertEqual(bytes(lower[4096:4096 + 65536]),
                         bytes(b ^ 0x5a for b in data))
        self.assertEqual(c.read(4096, 65536), (0, data))
        self.assertEqual(c.read(0, 2), (0, b'\x5a\x5a'))    # zero below
        # WRITE_ZEROES larger than max_data: key bytes below, zeroes above
        self.assertEqual(c.write_zeroes(1000, 200000), (0, b''))
        self.assertEqual(bytes(lower[1000:201000]), b'\x5a' * 200000)
        self.assertEqual(c.read(1000, 65536), (0, bytes(65536)))
        self.assertTrue(all(n <= 65536 for op, _, n, _ in c.lower_ops))
        # FUA reaches the node below
        c.lower_ops.clear()
        self.assertEqual(c.write(0, b'x', fua=True), (0, b''))
        self.assertEqual(c.lower_ops, [(p.OP_WRITE, 0, 1, p.REQ_FUA)])
        c.verify_io(MiB, rounds=2, seed=3)

    def test_xor_lower_errors(self):
        c = self.start(Xor(key='7'), bytearray(MiB))
        c.lower_errors[p.OP_READ] = errno.EIO
        self.assertEqual(c.read(0, 512), (-errno.EIO, b''))
        c.lower_errors[p.OP_WRITE] = errno.ENOSPC
        self.assertEqual(c.write(0, b'abc'), (-errno.ENOSPC, b''))
        c.lower_errors.clear()
        self.assertEqual(c.write(0, b'abc'), (0, b''))
        self.assertEqual(c.lower[:3], bytes(b ^ 7 for b in b'abc'))

    def test_latency(self):
        lower = bytearray(MiB)
        c = self.start(Latency(delay_ms='100'), lower)
        t0 = time.monotonic()
        self.assertEqual(c.write(512, b'late'), (0, b''))
        self.assertGreaterEqual(time.monotonic() - t0, 0.1)
        self.assertEqual(lower[512:516], b'late')

    def test_latency_overlaps(self):
        # Eight reads run side by side in the worker pool: each waits for
        # the other seven, so they complete only if they overlap (a
        # wall-clock bound would depend on the machine's load instead).
        lower = bytearray(MiB)
        lower[512:516] = b'late'
        device = _Overlapping(8)
        c = self.start(device, lower)
        handles = [c.submit(p.OP_READ, 512, 4) for _ in range(8)]
        self.assertEqual([c.collect(h) for h in handles], [(0, b'late')] * 8)
        self.assertFalse(device.barrier.broken)

    def test_logger(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'writes.log')
            lower = bytearray(MiB)
            device = Logger(path=path)
            self.addCleanup(device.log.close)
            c = self.start(device, lower)
            self.assertEqual(c.write(4096, b'abcd'), (0, b''))
            self.assertEqual(c.write(0, b'xyz', fua=True), (0, b''))
            self.assertEqual(c.read(4096, 4), (0, b'abcd'))
            self.assertEqual(c.request(p.OP_WRITE, 8, 2, b'rr',
                                       replay=True), (0, b''))
            self.assertEqual(lower[:3], b'xyz')
            self.assertEqual(lower[8:10], b'rr')
            with open(path) as f:
                lines = [line.split()[1:] for line in f]
            self.assertEqual(lines, [['write', '4096', '4'],
                                     ['write', '0', '3', 'fua'],
                                     ['write', '8', '2', 'replay']])


class ExampleDeviceShmTest(ExampleDeviceTest):
    """The same, with the shared-memory data path."""
    shm = True


class Shift(BlockDevice):
    """Forwards reads and writes 4096 bytes further down, uppercased."""

    def read(self, offset, length):
        return Forward(offset=offset + 4096)

    def write(self, offset, data, fua):
        return Forward(offset=offset + 4096, data=data.upper())


class Faulty(BlockDevice):
    """Completes requests wrongly in many ways."""
    size = 65536

    def read(self, offset, length):
        if offset == 0:
            raise DeviceError(errno.ENOSPC)
        if offset == 1:
            raise OSError(errno.EROFS, 'read-only')
        if offset == 2:
            raise RuntimeError('a bug')
        if offset == 3:
            return b'short'
        if offset == 4:
            return Forward(offset=1 << 30)
        if offset == 5:
            return None
        if offset == 6:
            return self.lower_read(1 << 30, 1)
        return Forward()

    def write(self, offset, data, fua):
        if offset == 0:
            return Forward(data=data + b'!')
        if offset == 1:
            return len(data)
        return Forward()


class NoLower(BlockDevice):
    """No node below and only defaults: what the spec says the client does
    for declined ops, and -EIO for reads and writes."""
    size = 8192
    features = p.F_FLUSH | p.F_DISCARD | p.F_ZEROES


class Zeroes(BlockDevice):
    """Completes WRITE_ZEROES itself through the node below."""

    def write_zeroes(self, offset, length, may_unmap):
        self.lower_write_zeroes(offset, length, may_unmap)


class BigRead(BlockDevice):
    """A read handler that reads more than max_data from the node below."""

    def read(self, offset, length):
        return self.lower_read(0, 200000)[offset:offset + length]


class ForwardAndErrorTest(DeviceTestCase):
    def test_forward_changed_offset_and_data(self):
        lower = bytearray(MiB)
        c = self.start(Shift(size=MiB - 4096), lower)
        self.assertEqual(c.size, MiB - 4096)
        self.assertEqual(c.write(10, b'hello'), (0, b''))
        self.assertEqual(lower[4106:4111], b'HELLO')
        self.assertEqual(lower[10:15], bytes(5))
        self.assertEqual(c.read(10, 5), (0, b'HELLO'))
        self.assertEqual(c.write(MiB - 4096 - 2, b'zz'), (0, b''))
        self.assertEqual(lower[-2:], b'ZZ')
        fwd = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual([m.offset for m in fwd], [4106, 4106, MiB - 2])
        self.assertEqual([m.data for m in fwd], [b'HELLO', b'', b'ZZ'])

    def test_errors_become_negative_errno(self):
        c = self.start(Faulty(), bytearray(MiB))
        self.assertEqual(c.read(0, 1), (-errno.ENOSPC, b''))
        self.assertEqual(c.read(1, 1), (-errno.EROFS, b''))
        with self.assertLogs('softdev', 'ERROR') as logs:
            self.assertEqual(c.read(2, 1), (-errno.EIO, b''))
            self.assertEqual(c.read(3, 1), (-errno.EIO, b''))
            self.assertEqual(c.read(4, 1), (-errno.EIO, b''))
            self.assertEqual(c.read(5, 1), (-errno.EIO, b''))
            self.assertEqual(c.read(6, 1), (-errno.EINVAL, b''))
            self.assertEqual(c.write(0, b'ab'), (-errno.EIO, b''))
            self.assertEqual(c.write(1, b'ab'), (-errno.EIO, b''))
        text = '\n'.join(logs.output)
        self.assertIn('RuntimeError: a bug', text)
        self.assertIn('device bug: COMPLETE of a READ with result 0 '
                      'carries 5 data bytes, must be 1', text)
        self.assertIn('exceeds the lower node size', text)
        self.assertIn('READ handler returned NoneType', text)
        self.assertIn('FORWARD of a WRITE carries 3 data bytes', text)
        self.assertIn('WRITE handler returned int', text)
        # The connection is still good, and lower errors of FORWARDs are
        # the request's result.
        self.assertEqual(c.write(8, b'ok'), (0, b''))
        c.lower_errors[p.OP_WRITE] = errno.EDQUOT
        self.assertEqual(c.write(8, b'no'), (-errno.EDQUOT, b''))
        self.assertEqual(c.lower[8:10], b'ok')

    def test_defaults_without_node_below(self):
        c = self.start(NoLower())
        self.assertEqual(c.flush(), (0, b''))
        self.assertEqual(c.discard(0, 512), (0, b''))    # no effect
        self.assertEqual(c.write_zeroes(0, 512), (-errno.ENOTSUP, b''))
        with self.assertLogs('softdev', 'ERROR'):
            self.assertEqual(c.read(0, 512), (-errno.EIO, b''))
            self.assertEqual(c.write(0, b'a'), (-errno.EIO, b''))

    def test_write_zeroes_fua_is_flushed(self):
        lower = bytearray(b'\xff' * MiB)
        c = self.start(Zeroes(), lower)
        self.assertEqual(self.ops(c), p.F_ZEROES | p.F_FUA | p.F_LOWER |
                         p.F_DISCARD)           # no write(): discards pass
        self.assertEqual(c.write_zeroes(0, 8, may_unmap=True, fua=True),
                         (0, b''))
        self.assertEqual(lower[:9], bytes(8) + b'\xff')
        self.assertEqual(c.lower_ops, [(p.OP_WRITE_ZEROES, 0, 8,
                                        p.REQ_MAY_UNMAP),
                                       (p.OP_FLUSH, 0, 0, 0)])

    def test_lower_read_is_split_by_max_data(self):
        lower = bytearray(os.urandom(MiB))
        c = self.start(BigRead(), lower)
        self.assertEqual(c.read(150000, 10), (0, lower[150000:150010]))
        self.assertEqual([(op, off, n) for op, off, n, _ in c.lower_ops],
                         [(0, 0, 65536), (0, 65536, 65536),
                          (0, 131072, 65536), (0, 196608, 3392)])


class ForwardAndErrorShmTest(ForwardAndErrorTest):
    shm = True


class WriteBlocker(BlockDevice):
    """The newcomer's device: refuses writes to the first MiB, and
    overrides nothing else."""

    def write(self, offset, data, fua):
        if offset < MiB:
            raise DeviceError(errno.EPERM)
        return Forward()


class PassingWriteBlocker(WriteBlocker):
    discard_passes = True


class SafeDefaultsTest(DeviceTestCase):
    """What changes data cannot bypass write(): write-zeroes reach it as
    data, discards are dropped unless they may pass."""

    def test_write_zeroes_reach_write(self):
        lower = bytearray(b'\xee' * (4 * MiB))
        c = self.start(WriteBlocker(), lower)
        self.assertEqual(self.ops(c), p.F_FUA | p.F_LOWER)
        self.assertEqual(c.write_zeroes(4096, 8192, may_unmap=True),
                         (-errno.EPERM, b''))
        self.assertEqual(c.write(0, b'x'), (-errno.EPERM, b''))
        self.assertEqual(bytes(lower[:MiB]), b'\xee' * MiB)
        # Where writes may go, the zeroes land, as WRITEs of zeroes
        c.lower_ops.clear()
        self.assertEqual(c.write_zeroes(2 * MiB, 3 * c.max_data),
                         (0, b''))
        self.assertEqual(bytes(lower[2 * MiB:2 * MiB + 3 * c.max_data]),
                         bytes(3 * c.max_data))
        self.assertEqual({op for op, _, _, _ in c.lower_ops}, {p.OP_WRITE})
        writes = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual(len(writes), 2 + 3)

    def test_discards_are_dropped(self):
        lower = bytearray(b'\xee' * (2 * MiB))
        c = self.start(WriteBlocker(), lower)
        c.lower_ops.clear()
        self.assertEqual(c.discard(0, 2 * MiB), (0, b''))
        self.assertEqual(bytes(lower), b'\xee' * (2 * MiB))
        self.assertEqual(c.lower_ops, [])

    def test_discards_may_pass(self):
        lower = bytearray(b'\xee' * (2 * MiB))
        c = self.start(PassingWriteBlocker(), lower)
        self.assertEqual(self.ops(c), p.F_FUA | p.F_LOWER | p.F_DISCARD)
        c.lower_ops.clear()
        self.assertEqual(c.discard(0, 4096), (0, b''))
        self.assertEqual(c.lower_ops, [(p.OP_DISCARD, 0, 4096, 0)])


class SafeDefaultsShmTest(SafeDefaultsTest):
    shm = True


class Recorder(RamDisk):
    """A RamDisk that records (op, offset, replay) of every request its
    handlers see, and how many ran at once."""
    workers = 4

    def __init__(self, delay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay
        self.seen = []
        self.lock = threading.Lock()
        self.running = self.most_running = 0

    def _note(self, op, offset):
        req = self.request
        with self.lock:
            self.seen.append((op, offset, req.replay, req.handle))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1

    def read(self, offset, length):
        self._note('read', offset)
        return super().read(offset, length)

    def write(self, offset, data, fua):
        self._note('write', offset)
        super().write(offset, data, fua)


class Capped(RamDisk):
    max_inflight = 3


class NegotiationTest(DeviceTestCase):
    shm = True

    def test_handshake_values(self):
        self.assertEqual(parse_size('64M'), 64 * MiB)
        self.assertEqual(parse_size('0x1b'), 27)
        self.assertEqual(parse_size('1.5KiB'), 1536)
        c = self.start(RamDisk(size='128K', max_data='64K'),
                       max_data=1 << 20)
        self.assertEqual((c.size, c.max_data), (131072, 65536))
        self.assertEqual(c.shm.size(), 64 * 65536)     # slots * max_data
        # An explicit features setting chooses the op bits; SHM follows
        # the shm setting.
        c = self.start(Passthrough(features='0x21'), bytearray(4096),
                       features=p.F_FLUSH | p.F_ZEROES | p.F_LOWER)
        self.assertEqual(c.features, p.F_FLUSH | p.F_SHM)
        c = self.start(Passthrough(features='0x21', shm='off'),
                       bytearray(4096))
        self.assertEqual(c.features, p.F_FLUSH)
        self.assertIsNone(c.shm)
        # A device may not lower max_data below 65536: it hangs up.
        ours, theirs = socket.socketpair()
        thread = threading.Thread(target=serve, daemon=True,
                                  args=(RamDisk(size='1M', max_data='4K'),
                                        theirs))
        thread.start()
        c = TestClient(ours)
        with self.assertLogs('softdev', 'ERROR') as logs:
            with self.assertRaisesRegex(ConnectionError, 'closed'):
                c.handshake()
            thread.join(5)
        self.assertIn('max_data 4096 is below 65536', logs.output[0])
        c.close()

    def test_unknown_offered_feature_bit_ignored(self):
        future = 1 << 6 | 1 << 63
        c = self.start(RamDisk(size='1M'), features=p.F_FLUSH | future)
        self.assertEqual(c.features, p.F_FLUSH | p.F_SHM)
        self.assertEqual(c.write(0, b'new'), (0, b''))
        self.assertEqual(c.read(0, 3), (0, b'new'))

    def test_empty_node_below(self):
        # LOWER offered with lower_size 0: a node below that is empty
        c = self.start(Passthrough(), bytearray())
        self.assertEqual((c.size, self.ops(c)),
                         (0, p.F_LOWER | p.F_DISCARD | p.F_ZEROES))

    def test_max_inflight(self):
        device = Capped(size='1M')
        c = self.start(device, max_inflight=16)
        self.assertEqual((c.hello_reply.max_inflight, c.max_inflight),
                         (3, 3))
        self.assertEqual(device.max_inflight, 3)
        self.assertEqual(c.shm.size(), 3 * 65536)
        # the client keeps to 3 outstanding, so 10 requests still work
        handles = c.submit_many((p.OP_WRITE, i * 512, 512, bytes([i]) * 512)
                                for i in range(10))
        self.assertEqual(c.collect_all(handles), [(0, b'')] * 10)
        self.assertEqual(c.read(9 * 512, 2), (0, b'\x09\x09'))
        # a device limit above the client's is no limit: 0 in the reply
        c = self.start(Capped(size='1M'), max_inflight=2)
        self.assertEqual((c.hello_reply.max_inflight, c.max_inflight),
                         (0, 2))
        # one request over the limit is a protocol error
        c = self.start(Capped(size='1M', shm='off'))
        with self.assertLogs('softdev', 'ERROR') as logs:
            c.send_raw(b''.join(req(p.OP_READ, 0, 1, handle=h)
                                for h in range(1, 5)))
            self.assertTrue(c.expect_eof())
        self.assertIn('REQUEST handle 4 exceeds max_inflight 3',
                      logs.output[0])

    def test_replay_flag_reaches_handlers(self):
        device = Recorder(size='1M')
        c = self.start(device)
        self.assertEqual(c.write(0, b'a'), (0, b''))
        self.assertEqual(c.request(p.OP_WRITE, 512, 1, b'b', handle=9,
                                   replay=True), (0, b''))
        self.assertEqual(c.request(p.OP_READ, 512, 1, replay=True),
                         (0, b'b'))
        self.assertEqual(device.seen, [('write', 0, False, 1),
                                       ('write', 512, True, 9),
                                       ('read', 512, True, 2)])
        self.assertIsNone(device.request)       # outside a handler

    def test_batched_requests(self):
        """Many requests in one write are all answered, and the replies
        come back in fewer writes than there were requests."""
        for workers, shm in ((1, True), (1, False), (4, True)):
            with self.subTest(workers=workers, shm=shm):
                device = RamDisk(size='1M', workers=workers, shm=shm)
                c = self.start(device, max_inflight=128)
                self.assertEqual(c.shm_active, shm)
                data = {i: os.urandom(4096) for i in range(100)}
                writes_before = c.writes
                handles = c.submit_many((p.OP_WRITE, i * 4096, 4096, d)
                                        for i, d in data.items())
                self.assertEqual(c.writes, writes_before + 1)
                self.assertEqual(c.collect_all(handles), [(0, b'')] * 100)
                handles = c.submit_many((p.OP_READ, i * 4096, 4096)
                                        for i in data)
                self.assertEqual(c.collect_all(handles),
                                 [(0, d) for d in data.values()])
                replies = [m for m in c.received if isinstance(m, p.Reply)]
                self.assertEqual(len(replies), 200)
        # With one handler thread, the replies to requests queued together
        # are held back while more wait, and go out MAX_DEFERRED at a time:
        # count the device's writes on its socket.  The first read waits
        # until the reader has queued the other 63, so the batch is whole
        # however fast either thread runs.
        ours, theirs = socket.socketpair()
        counting = _CountingSocket(theirs)
        device = _GatedRam(size='1M', shm='off')
        conn = Connection(device, counting)
        thread = threading.Thread(target=conn.run, daemon=True)
        thread.start()
        c = TestClient(ours)
        self.addCleanup(self.stop, c, thread)
        c.handshake(max_inflight=64)
        before = counting.writes
        handles = c.submit_many((p.OP_READ, i * 512, 512)
                                for i in range(64))
        self.assertTrue(device.entered.wait(10))
        deadline = time.monotonic() + 10
        while conn._queue.qsize() < 63:
            self.assertLess(time.monotonic(), deadline, 'requests not queued')
            time.sleep(0.001)
        device.gate.set()
        self.assertEqual(c.collect_all(handles), [(0, bytes(512))] * 64)
        self.assertLessEqual(counting.writes - before,
                             64 // MAX_DEFERRED + 1)


class _Overlapping(Latency):
    """Forwards reads once @parties of them are running at the same time
    (for the worker pool test); a read that waits 10 s fails."""

    def __init__(self, parties, **kwargs):
        super().__init__(delay_ms='0', **kwargs)
        self.barrier = threading.Barrier(parties, timeout=10)

    def read(self, offset, length):
        self.barrier.wait()
        return super().read(offset, length)


class _GatedRam(RamDisk):
    """A RamDisk whose first read waits for gate (for the batching test)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def read(self, offset, length):
        if not self.entered.is_set():
            self.entered.set()
            self.gate.wait(10)
        return super().read(offset, length)


class _CountingSocket(socket.socket):
    """A socket that counts sendall() calls (for the batching test)."""

    def __init__(self, sock):
        super().__init__(sock.family, sock.type, fileno=sock.detach())
        self.writes = 0

    def sendall(self, data, *args):
        self.writes += 1
        return super().sendall(data, *args)


# -- the server: broken clients, reconnects, command line --------------------

class SlowRam(RamDisk):
    """A RamDisk whose writes take 0.2 s, announcing start and end."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.started = threading.Event()
        self.writes = []

    def write(self, offset, data, fua):
        self.started.set()
        time.sleep(0.2)
        super().write(offset, data, fua)
        self.writes.append((time.monotonic(), self.request.replay))


class ServerTest(unittest.TestCase):
    def serve(self, device):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.path = os.path.join(tmp.name, 'dev.sock')
        server = Server.unix(device, self.path, handshake_timeout=0.5)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop():
            server.close()
            thread.join(5)
            self.assertFalse(thread.is_alive())
        self.addCleanup(stop)
        return server

    def connect(self, lower=None, shm=False):
        return TestClient.connect_unix(self.path, lower=lower, timeout=5,
                                       shm=shm)

    def broken_shm_setup(self, wire=None, fds=None, memfd_size=4 * 65536):
        """Connect, accept SHM (4 slots of 65536 bytes) and send wire
        (default: a good SHM_SETUP) with fds (default: one memfd of
        memfd_size bytes).  Returns the client."""
        c = self.connect(shm=True)
        c.handshake(max_inflight=4, shm_setup=False)
        self.assertTrue(c.features & p.F_SHM)
        if wire is None:
            wire = raw(3, shm_payload(4, 65536))
        if fds is None:
            fd = os.memfd_create('test')
            self.addCleanup(os.close, fd)
            os.ftruncate(fd, memfd_size)
            fds = [fd]
        c.send_raw(wire, fds)
        return c

    def test_survives_broken_clients(self):
        self.serve(RamDisk(size='1M'))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        rng = random.Random(5)
        broken = [      # (handshake first?, bytes, expected log)
            (False, raw(1, hello_payload(), magic=0xdeadbeef), 'bad magic'),
            (False, raw(1, length=1 << 20), 'exceeds 4096 before the'),
            (True, raw(33, lreply_payload(), handle=42),
             'not an outstanding LOWER_REQUEST'),
            (True, raw(16, length=(1 << 20) + 25),
             r'exceeds max_data 65536 \+ 24'),
            (True, req(p.OP_READ, MiB, 1), 'exceeds the device size'),
            (False, b'SDTP' + rng.randbytes(100), 'protocol error'),
            (False, b'', 'no HELLO within 0.5 s'),
        ]
        with self.assertLogs('softdev', 'ERROR') as logs:
            for handshake, data, _ in broken:
                c = self.connect()
                if handshake:
                    c.handshake()
                c.send_raw(data)
                self.assertTrue(c.expect_eof())
                c.close()
            for i in range(5):          # random bytes, then hang up
                c = self.connect()
                c.send_raw(rng.randbytes(rng.randrange(1, 200)))
                try:
                    c.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.assertTrue(c.expect_eof())
                c.close()
        for (_, _, regex), line in zip(broken, logs.output):
            self.assertRegex(line, regex)
        c = self.connect()
        c.handshake()
        self.assertEqual(c.write(0, b'still here'), (0, b''))
        self.assertEqual(c.read(0, 10), (0, b'still here'))
        c.close()

    def test_unix_socket_path(self):
        server = self.serve(Passthrough())
        with self.assertRaises(OSError) as cm:
            Server.unix(Passthrough(), self.path)       # a live server
        self.assertEqual(cm.exception.errno, errno.EADDRINUSE)
        stale = self.path + '.stale'
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(stale)                            # nobody listens
        other = Server.unix(Passthrough(), stale)
        self.assertEqual(other.address(), f'unix:{stale}')
        other.close()
        self.assertFalse(os.path.exists(stale))
        self.assertEqual(server.address(), f'unix:{self.path}')

    def test_reconnect_replays_request(self):
        device = SlowRam(size='1M')
        self.serve(device)
        c1 = self.connect(shm=True)
        c1.handshake()
        c1.submit(p.OP_WRITE, 8192, data=b'replayed', handle=7)
        self.assertTrue(device.started.wait(5))
        c1.close()                      # the reply of handle 7 is lost
        c2 = self.connect(shm=True)
        c2.handshake()
        self.assertTrue(c2.shm_active)
        # The old handler had ended before the new connection was served.
        self.assertEqual(len(device.writes), 1)
        # As QEMU does: outstanding requests again, flagged REPLAY, with
        # their data copied into the new connection's shared memory.
        self.assertEqual(c2.replay(c1.outstanding()), [7])
        self.assertEqual(c2.collect(7), (0, b''))
        self.assertEqual([replay for _, replay in device.writes],
                         [False, True])
        self.assertEqual(c2.read(8192, 8), (0, b'replayed'))
        self.assertEqual([m.handle for m in c2.received
                          if isinstance(m, p.Reply)], [7, 1])
        c2.close()

    def test_broken_shm_setups(self):
        """Each broken SHM_SETUP drops the connection with a clear log
        line; the server goes on serving."""
        self.serve(RamDisk(size='1M'))
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        big = os.memfd_create('test')
        self.addCleanup(os.close, big)
        os.ftruncate(big, 4 * 65536)
        cases = [   # kwargs of broken_shm_setup, expected log
            (dict(fds=[]), 'SHM_SETUP came without a file descriptor'),
            (dict(fds=[big, big]), 'SHM_SETUP came with 2 file '
             'descriptors, must be exactly 1'),
            (dict(wire=raw(3, shm_payload(8, 65536))),
             'SHM_SETUP geometry 8 slots of 65536 bytes differs from the '
             'handshake: max_inflight 4, max_data 65536'),
            (dict(wire=raw(3, shm_payload(4, 1 << 20))),
             'SHM_SETUP geometry 4 slots of 1048576 bytes differs'),
            (dict(memfd_size=4096), 'the shared memory of SHM_SETUP is 4096 '
             'bytes, less than 4 slots of 65536'),
            (dict(fds=[r]), 'not a memfd or regular file'),
            (dict(wire=raw(3, shm_payload()) +
                  req(p.OP_READ, 0, 4, slot=4)),
             r'REQUEST slot 4 out of range \(4 slots\)'),
            (dict(wire=raw(3, shm_payload()) +
                  req(p.OP_WRITE, 0, 4, slot=1, data=b'abcd')),
             'REQUEST carries 4 inline data bytes; with SOFTDEV_TAP_F_SHM '
             'its data is in the slot'),
            (dict(wire=raw(3, shm_payload()) +
                  req(p.OP_READ, 0, 4, handle=1, slot=3) +
                  req(p.OP_READ, 0, 4, handle=2, slot=3)),
             'REQUEST handle 2 uses slot 3, which outstanding handle 1'),
            (dict(wire=req(p.OP_READ, 0, 4), fds=[]),
             'REQUEST before SHM_SETUP'),
        ]
        with self.assertLogs('softdev', 'ERROR') as logs:
            for kwargs, _ in cases:
                c = self.broken_shm_setup(**kwargs)
                self.assertTrue(c.expect_eof())
                c.close()
            # fds with anything but SHM_SETUP
            c = self.connect(shm=True)
            c.handshake()
            c.send_raw(p.encode(p.Request(1, p.OP_READ, 0, 4)), [big])
            self.assertTrue(c.expect_eof())
            c.close()
            c = self.connect()
            c.send_raw(p.encode(p.Hello(p.F_ALL, 0)), [big])
            self.assertTrue(c.expect_eof())
            c.close()
        self.assertEqual(len(logs.output), len(cases) + 2)
        for (_, regex), line in zip(cases, logs.output):
            self.assertRegex(line, regex)
            self.assertIn('dropping the connection', line)
        self.assertIn('1 file descriptor(s) received outside SHM_SETUP',
                      logs.output[-2])
        self.assertIn('1 file descriptor(s) received outside SHM_SETUP',
                      logs.output[-1])
        # A good one, by hand, then by TestClient
        c = self.broken_shm_setup()
        c.send_raw(req(p.OP_READ, 0, 4, slot=3))
        self.assertEqual(p.HEADER.unpack(c.sock.recv(24))[1], p.TYPE_REPLY)
        c.close()
        c = self.connect(shm=True)
        c.handshake()
        self.assertTrue(c.shm_active)
        c.verify_io(MiB, rounds=2)
        c.close()

    def test_truncated_and_out_of_order(self):
        self.serve(RamDisk(size='1M'))
        cases = [   # (handshake first?, bytes, expected log)
            (True, req(p.OP_WRITE, 0, 100, data=bytes(100))[:84],
             'closed the connection inside a message \\(84 bytes of it'),
            (True, raw(17, rpl_payload()), 'REPLY is sent by the device'),
            (True, raw(3, shm_payload()), 'SHM_SETUP but SOFTDEV_TAP_F_SHM '
             'was not negotiated'),
            (False, raw(3, shm_payload()), 'SHM_SETUP before HELLO'),
            (False, req(p.OP_READ, 0, 1), 'REQUEST before HELLO'),
            (True, raw(1, hello_payload()), 'second HELLO'),
            (True, raw(16, length=(1 << 20) + 25),
             r'exceeds max_data 65536 \+ 24'),
            (True, req(p.OP_READ, 0, 1) + req(p.OP_READ, 0, 1),
             'handle 1 is already outstanding'),
        ]
        with self.assertLogs('softdev', 'ERROR') as logs:
            for handshake, data, _ in cases:
                c = self.connect()
                if handshake:
                    c.handshake()
                c.send_raw(data)
                c.sock.shutdown(socket.SHUT_WR)
                self.assertTrue(c.expect_eof())
                c.close()
        self.assertEqual(len(logs.output), len(cases))
        for (_, _, regex), line in zip(cases, logs.output):
            self.assertRegex(line, regex)

    def test_allow_uid(self):
        server = self.serve(RamDisk(size='1M'))
        server.allow_uids = {65534 if os.getuid() != 65534 else 65533}
        with self.assertLogs('softdev', 'ERROR') as logs:
            c = self.connect()
            self.assertTrue(c.expect_eof())
            c.close()
        self.assertRegex(logs.output[0], f'refusing a client with uid '
                         f'{os.getuid()} \\(pid {os.getpid()}\\): allowed '
                         f'uids are 6553[34]; closing')
        server.allow_uids.add(os.getuid())
        c = self.connect()
        c.handshake()
        self.assertEqual(c.read(0, 1), (0, b'\0'))
        c.close()
        with self.assertRaisesRegex(ValueError, 'needs a unix socket'):
            Server.tcp(RamDisk(size='1M'), '127.0.0.1', 0,
                       allow_uids={0})

    def test_vsock(self):
        try:
            server = Server.vsock(RamDisk(size='64K'),
                                  socket.VMADDR_CID_ANY, 0xfffffff0 - 7)
        except (OSError, AttributeError) as e:
            self.skipTest(f'no vsock here: {e}')
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.close)
        self.assertTrue(server.address().startswith('vsock:'))
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.settimeout(1)
            sock.connect((1, 0xfffffff0 - 7))       # VMADDR_CID_LOCAL
            sock.settimeout(5)
        except OSError as e:
            sock.close()
            self.skipTest(f'no vsock loopback here: {e}')
        c = TestClient(sock, shm=True)
        c.handshake()
        self.assertFalse(c.shm_active)      # unix sockets only
        self.assertEqual(c.write(0, b'vsock'), (0, b''))
        self.assertEqual(c.read(0, 5), (0, b'vsock'))
        c.close()

    def test_reconnect_while_waiting_below(self):
        lower = bytearray(MiB)
        self.serve(Xor(key='0x01'))
        c1 = self.connect(lower)
        c1.handshake()
        c1.send_raw(p.encode(p.Request(7, p.OP_WRITE, 0, 3, 0, b'abc')))
        # The device waits for a LOWER_REPLY that never comes.
        data = c1.sock.recv(4096)
        self.assertEqual(data[:6], b'SDTP\x20\x00')     # LOWER_REQUEST
        c1.close()
        c2 = self.connect(lower)
        c2.handshake()
        self.assertEqual(lower[:3], bytes(3))
        self.assertEqual(c2.request(p.OP_WRITE, 0, data=b'abc', handle=7),
                         (0, b''))
        self.assertEqual(lower[:3], b'`cb')
        self.assertEqual(c2.read(0, 3), (0, b'abc'))
        c2.close()

    def test_tcp(self):
        server = Server.tcp(RamDisk(size='64K'), '127.0.0.1', 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.listener.getsockname()[1]
        self.assertEqual(server.address(), f'tcp:127.0.0.1:{port}')
        c = TestClient(socket.create_connection(('127.0.0.1', port), 5))
        c.handshake()
        self.assertEqual(c.write(0, b'tcp'), (0, b''))
        self.assertEqual(c.read(0, 3), (0, b'tcp'))
        c.close()
        server.close()
        thread.join(5)
        self.assertFalse(thread.is_alive())

    def test_command_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'ram.sock')
            env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
            proc = subprocess.Popen(
                ['/usr/bin/python3', '-m', 'softdev', 'run',
                 'softdev.examples.ramdisk:RamDisk', '--unix', path,
                 '--arg', 'size=1M'], env=env, stderr=subprocess.PIPE,
                text=True)
            try:
                deadline = time.monotonic() + 5
                while not os.path.exists(path):
                    self.assertLess(time.monotonic(), deadline)
                    self.assertIsNone(proc.poll())
                    time.sleep(0.02)
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
                c = TestClient.connect_unix(path)
                self.assertEqual(c.handshake().size, MiB)
                self.assertEqual(c.write(7, b'cli'), (0, b''))
                self.assertEqual(c.read(7, 3), (0, b'cli'))
                proc.terminate()        # while the client is connected
                _, err = proc.communicate(timeout=5)
                c.close()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            self.assertEqual(proc.returncode, 0, err)
            self.assertIn(f'listening on unix:{path}', err)
            self.assertFalse(os.path.exists(path))

    def run_cli(self, *args):
        """Start 'python3 -m softdev run ...'; stopped at cleanup."""
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        proc = subprocess.Popen(['/usr/bin/python3', '-m', 'softdev', 'run',
                                 *args], env=env, stderr=subprocess.PIPE,
                                text=True)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=5)
            proc.stderr.close()
        self.addCleanup(stop)
        return proc

    def wait_line(self, proc, text):
        """The first line of proc's stderr that contains text."""
        while True:
            line = proc.stderr.readline()
            self.assertTrue(line, f'no {text!r} in the output')
            if text in line:
                return line

    def test_command_line_tcp(self):
        proc = self.run_cli('softdev.examples.ramdisk:RamDisk', '--tcp',
                            '127.0.0.1:0', '--arg', 'size=64K')
        line = self.wait_line(proc, 'listening on tcp:127.0.0.1:')
        port = int(line.rsplit(':', 1)[1])
        c = TestClient(socket.create_connection(('127.0.0.1', port), 5),
                       shm=True)
        c.handshake()
        self.assertFalse(c.shm_active)          # not over TCP
        self.assertEqual(c.write(0, b'tcp'), (0, b''))
        self.assertEqual(c.read(0, 3), (0, b'tcp'))
        c.close()
        proc.terminate()
        self.assertEqual(proc.wait(5), 0)

    def test_command_line_allow_uid(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'ram.sock')
            other = 65534 if os.getuid() != 65534 else 65533
            proc = self.run_cli('softdev.examples.ramdisk:RamDisk', '--unix',
                                path, '--allow-uid', str(other), '--arg',
                                'size=64K')
            self.wait_line(proc, 'listening on unix:')
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            c = TestClient.connect_unix(path)
            self.assertTrue(c.expect_eof())
            c.close()
            self.assertIn(f'refusing a client with uid {os.getuid()} ',
                          self.wait_line(proc, 'refusing'))
            proc.terminate()
            self.assertEqual(proc.wait(5), 0)
            proc = self.run_cli('softdev.examples.ramdisk:RamDisk', '--unix',
                                path, '--allow-uid',
                                f'{other},{os.getuid()}')
            self.wait_line(proc, 'listening on unix:')
            c = TestClient.connect_unix(path, shm=True)
            c.handshake()
            self.assertTrue(c.shm_active)
            self.assertEqual(c.write(0, b'ok'), (0, b''))
            c.close()
            proc.terminate()
            self.assertEqual(proc.wait(5), 0)

    def test_command_line_errors(self):
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        ramdisk = 'softdev.examples.ramdisk:RamDisk'
        for args, message in [
                (['softdev.examples.ramdisk', '--unix', '/nonexistent'],
                 'MODULE:CLASS'),
                (['softdev.protocol:Decoder', '--unix', '/nonexistent'],
                 'not a BlockDevice subclass'),
                ([ramdisk, '--tcp', '127.0.0.1:0', '--allow-uid', '0'],
                 '--allow-uid needs --unix'),
                ([ramdisk, '--unix', '/nonexistent', '--allow-uid',
                  'no-such-user-here'], "no user 'no-such-user-here'"),
                ([ramdisk, '--vsock', '3'], 'expects CID:PORT')]:
            proc = subprocess.run(['/usr/bin/python3', '-m', 'softdev',
                                   'run', *args],
                                  env=env, capture_output=True, text=True,
                                  timeout=10)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn(message, proc.stderr)

    def test_start_up_errors_are_messages(self):
        """What keeps a device from starting is one clear message, not a
        traceback (unless -v asks for it)."""
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        with tempfile.TemporaryDirectory() as tmp:
            sock = os.path.join(tmp, 's')
            for name, text in (('missing.py', 'import no_such_module\n'),
                               ('syntax.py', 'def f(:\n'),
                               ('fine.py', 'x = 1\n')):
                with open(os.path.join(tmp, name), 'w') as f:
                    f.write(text)
            ramdisk = 'softdev.examples.ramdisk:RamDisk'
            for args, lines in [
                    ([os.path.join(tmp, 'missing.py') + ':D'],
                     ['softdev: cannot load ' + tmp + '/missing.py:',
                      "  ModuleNotFoundError: No module named "
                      "'no_such_module'"]),
                    ([os.path.join(tmp, 'syntax.py') + ':D'],
                     ['softdev: cannot load ' + tmp + '/syntax.py:',
                      '  SyntaxError: invalid syntax']),
                    ([os.path.join(tmp, 'nothere.py') + ':D'],
                     [f'softdev: no file {tmp}/nothere.py']),
                    ([os.path.join(tmp, 'fine.py') + ':D'],
                     [f'softdev: {tmp}/fine.py has no D']),
                    (['no_such_package.mod:D'],
                     ['softdev: cannot load no_such_package.mod:']),
                    ([ramdisk, '--arg', 'sise=1M'],
                     ['softdev: RamDisk takes no --arg sise (it takes: size, '
                      'features, max_data, workers, max_inflight, shm)']),
                    ([ramdisk, '--arg', 'size=big'],
                     ['softdev: cannot create RamDisk with --arg size=big:',
                      "  ValueError: not a size: 'big'"]),
                    (['softdev.examples.xor:Xor', '--arg', 'key=zz'],
                     ['softdev: cannot create Xor with --arg key=zz:'])]:
                with self.subTest(args=args):
                    proc = subprocess.run(
                        ['/usr/bin/python3', '-m', 'softdev', 'run', *args,
                         '--unix', sock], env=env, capture_output=True,
                        text=True, timeout=10)
                    self.assertEqual(proc.returncode, 1)
                    for line in lines:
                        self.assertIn(line + '\n', proc.stderr)
                    self.assertNotIn('Traceback', proc.stderr)
            # -v: the traceback too
            proc = subprocess.run(
                ['/usr/bin/python3', '-m', 'softdev', 'run', '-v',
                 os.path.join(tmp, 'missing.py') + ':D', '--unix', sock],
                env=env, capture_output=True, text=True, timeout=10)
            self.assertIn('Traceback', proc.stderr)
            proc = subprocess.run(
                ['/usr/bin/python3', '-m', 'softdev', 'run', ramdisk,
                 '--unix', os.path.join(tmp, 'no', 'dir')], env=env,
                capture_output=True, text=True, timeout=10)
            self.assertEqual(proc.stderr, f'softdev: cannot listen on {tmp}'
                             '/no/dir: No such file or directory\n')


if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING)
    unittest.main()
