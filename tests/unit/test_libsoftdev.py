"""
Tests of libsoftdev, the C library for soft devices: builds it and its
examples with libsoftdev/build.sh into build/unit/libsoftdev, runs each
example on a unix socket (as a program, or as an object loaded by
softdev-run) and drives it with the Python TestClient, which checks
everything the device sends.  Every example runs with and without the
shared-memory data path.  Also: the server's options (--tcp, --vsock,
--fd, --allow-uid), install.sh and pkg-config.  Set SANITIZE=1 for
ASan/UBSan.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import errno
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(SRC, 'python'))

from softdev import protocol as p  # noqa: E402
from softdev.testclient import TestClient  # noqa: E402

OUT = os.path.join(SRC, 'build', 'unit', 'libsoftdev')
MiB = 1 << 20
BAD_OUTPUT = ('AddressSanitizer', 'runtime error:', 'callback returned',
              'LeakSanitizer')
_built = False


def build():
    global _built
    if not _built:
        subprocess.run(['sh', os.path.join(SRC, 'libsoftdev', 'build.sh'),
                        SRC, OUT], check=True)
        _built = True


def header(t, handle, length, flags=0):
    return p.HEADER.pack(p.MAGIC, t, flags, handle, length, 0)


def raw_request(handle, op, offset, length, slot=0, data=b'', flags=0):
    return (header(p.TYPE_REQUEST, handle, 24 + len(data)) +
            p.REQUEST.pack(op, flags, slot, offset, length) + data)


def shm_setup(slots, slot_size, ring_entries=0, reserved=0):
    return (header(p.TYPE_SHM_SETUP, 0, 16) +
            p.SHM_SETUP.pack(slots, slot_size, ring_entries, reserved))


def memfd(size):
    fd = os.memfd_create('test', os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def check_io(c, span=MiB, rounds=2, count=16, seed=0):
    """Random WRITEs in one batch, then READs of the same ranges in one
    batch, checked against a model.  The ranges of a batch do not overlap:
    a device may run the requests of a batch in any order."""
    rng = random.Random(seed)
    span = min(span, c.size)
    model = bytearray()
    for off in range(0, span, c.max_data):
        result, data = c.read(off, min(c.max_data, span - off))
        assert result == 0, f'READ at {off}: {result}'
        model += data
    cell = span // count
    for _ in range(rounds):
        ranges = []
        for i in range(count):
            n = rng.randrange(1, min(cell, c.max_data) + 1)
            off = i * cell + rng.randrange(cell - n + 1)
            data = rng.randbytes(n)
            model[off:off + n] = data
            ranges.append((off, n, data))
        rng.shuffle(ranges)
        handles = c.submit_many((p.OP_WRITE, off, n, data)
                                for off, n, data in ranges)
        for h in handles:
            assert c.collect(h) == (0, b''), f'WRITE handle {h}'
        handles = c.submit_many((p.OP_READ, off, n) for off, n, _ in ranges)
        for (off, n, _), h in zip(ranges, handles):
            result, data = c.collect(h)
            assert result == 0 and data == model[off:off + n], \
                f'READ {off}+{n}: result {result}, data differs'


class DeviceProcess:
    """A device process on a listening socket; stop() checks its stderr."""

    def __init__(self, argv, path=None, wait_for=None):
        self.path = path
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.stderr = ''
        self.first_line = ''
        deadline = time.monotonic() + 10
        if wait_for == 'line':
            self.first_line = self.proc.stderr.readline().decode()
            return
        while path and not os.path.exists(path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f'{argv[0]} did not start: '
                                     f'{self.proc.stderr.read().decode()}')
            time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)
        if not self.proc.stderr.closed:
            self.stderr = self.first_line + self.proc.stderr.read().decode()
            self.proc.stderr.close()
        return self.stderr


class ExampleTest(unittest.TestCase):
    """Runs one example per test on a socket in a temporary directory."""

    example = None
    args = ()
    shm = False         # offer the shared-memory data path
    ring = False        # ...with rings
    runner = False      # load example.so with softdev-run
    options = ()        # softdev_main options

    @classmethod
    def setUpClass(cls):
        build()

    def argv(self, *extra):
        if self.runner:
            cmd = [os.path.join(OUT, 'softdev-run'),
                   os.path.join(OUT, self.example + '.so')]
        else:
            cmd = [os.path.join(OUT, self.example)]
        return cmd + ['--unix', self.path, *self.options, *extra,
                      *self.args]

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, 'dev.sock')
        self.dev = DeviceProcess(self.argv(), self.path)
        self.clients = []
        self.allowed_errors = ()

    def tearDown(self):
        for client in self.clients:
            client.close()
        self.stderr = self.dev.stop()
        for bad in BAD_OUTPUT:
            self.assertNotIn(bad, self.stderr)
        if not self.allowed_errors:
            self.assertNotIn('protocol error', self.stderr)
        for msg in self.allowed_errors:
            self.assertIn(msg, self.stderr)
        self.assertFalse(os.path.exists(self.path),
                         'SIGTERM left the socket behind')
        self.tmp.cleanup()

    def expect_errors(self, *msgs):
        """The device must report these (checked at tearDown)."""
        self.allowed_errors += msgs

    def connect(self, lower=None, shm=None, ring=None, **kwargs):
        shm = self.shm if shm is None else shm
        ring = self.ring if ring is None else ring
        client = TestClient.connect_unix(self.path, lower=lower, shm=shm,
                                         ring=ring)
        self.clients.append(client)
        client.handshake(**kwargs)
        if shm and kwargs.get('shm_setup', True):
            self.assertTrue(client.shm_active)
        return client

    def raw(self):
        """A connected client that has sent nothing."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self.path)
        client = TestClient(sock)
        self.clients.append(client)
        return client

    def shm_bit(self):
        return p.F_SHM if self.shm else 0


class RamdiskTest(ExampleTest):
    example = 'ramdisk'
    args = ('size=1M',)

    def test_handshake(self):
        c = self.connect()
        self.assertEqual(c.size, MiB)
        self.assertEqual(c.hello_reply.size, MiB)
        self.assertEqual(c.features, p.F_FLUSH | p.F_DISCARD | p.F_ZEROES |
                         p.F_FUA | self.shm_bit())
        self.assertEqual(c.max_data, p.MIN_MAX_DATA)
        self.assertEqual(c.hello_reply.max_inflight, 0)
        self.assertEqual(c.max_inflight, p.DEFAULT_MAX_INFLIGHT)

    def test_larger_max_data(self):
        c = self.connect(max_data=4 * MiB, max_inflight=8)
        self.assertEqual(c.max_data, MiB)       # the library's default
        data = os.urandom(MiB)
        self.assertEqual(c.write(0, data), (0, b''))
        self.assertEqual(c.read(0, MiB), (0, data))

    def test_unknown_feature_bits_ignored(self):
        c = self.connect(features=p.F_ALL & ~p.F_LOWER | 1 << 40 | 1 << 63)
        self.assertEqual(c.features, p.F_FLUSH | p.F_DISCARD | p.F_ZEROES |
                         p.F_FUA | self.shm_bit())
        self.assertEqual(c.write(0, b'z' * 512), (0, b''))

    def test_store_and_return(self):
        c = self.connect()
        data = os.urandom(65536)
        self.assertEqual(c.write(4096, data, fua=True), (0, b''))
        self.assertEqual(c.read(4096, 65536), (0, data))
        self.assertEqual(c.read(0, 4096), (0, bytes(4096)))
        self.assertEqual(c.read(MiB - 512, 512), (0, bytes(512)))
        self.assertEqual(c.write_zeroes(8192, 100, may_unmap=True), (0, b''))
        self.assertEqual(c.read(4096, 65536),
                         (0, data[:4096] + bytes(100) + data[4196:]))
        self.assertEqual(c.flush(), (0, b''))
        self.assertEqual(c.lower_ops, [])
        # the data outlives the connection
        c.close()
        self.assertEqual(self.connect().read(4096, 65536)[1][:4096],
                         data[:4096])

    def test_batched_io(self):
        c = self.connect()
        check_io(c, rounds=3, count=48)
        # requests went out many at a time
        self.assertLess(c.writes, 3 * 2 * 48)

    def test_batch_of_reads_then_writes(self):
        # One write of READs (512 KiB of replies) then WRITEs (512 KiB),
        # more than the socket buffers hold: the client reads nothing until
        # it has written everything, so the device must keep reading while
        # it sends.
        c = self.connect()
        data = [os.urandom(65536) for _ in range(16)]
        with c.batch():
            reads = [c.submit(p.OP_READ, i * 65536, 65536)
                     for i in range(8)]
            writes = [c.submit(p.OP_WRITE, i * 65536, 65536, data[i])
                      for i in range(8, 16)]
        for h in reads:
            self.assertEqual(c.collect(h), (0, bytes(65536)))
        for h in writes:
            self.assertEqual(c.collect(h), (0, b''))
        self.assertEqual(c.read(10 * 65536, 65536), (0, data[10]))

    def test_forward_without_lower(self):
        c = self.connect()
        # discard returns SOFTDEV_FORWARD; there is no node below: done
        # without effect, and a write-zeroes forwarded fails with -ENOTSUP
        self.assertEqual(c.discard(0, 4096), (0, b''))
        # without F_DISCARD the client itself answers the same
        c.close()
        c = self.connect(features=p.F_ALL & ~p.F_LOWER & ~p.F_DISCARD)
        self.assertEqual(c.features & p.F_DISCARD, 0)
        self.assertEqual(c.discard(0, 4096), (0, b''))

    def test_parallel_requests(self):
        c = self.connect()
        chunks = {i: bytes([i]) * 65536 for i in range(1, 16)}
        handles = [c.submit(p.OP_WRITE, i * 65536, 65536, d)
                   for i, d in chunks.items()]
        for h in handles:
            self.assertEqual(c.collect(h), (0, b''))
        handles = {i: c.submit(p.OP_READ, i * 65536, 65536) for i in chunks}
        for i, h in handles.items():
            self.assertEqual(c.collect(h), (0, chunks[i]))

    def test_replayed_requests(self):
        c = self.connect()
        self.assertEqual(c.write(0, b'r' * 512), (0, b''))
        c.close()
        c2 = self.connect()
        h = c2.submit(p.OP_WRITE, 0, 512, b's' * 512, handle=1, replay=True)
        self.assertEqual(c2.collect(h), (0, b''))
        self.assertEqual(c2.read(0, 512), (0, b's' * 512))

    def test_bad_magic_then_reconnect(self):
        self.expect_errors('bad magic')
        c = self.connect()
        self.assertEqual(c.write(0, b'x' * 512), (0, b''))
        c.send_raw(b'\0' * p.HEADER_SIZE)
        self.assertTrue(c.expect_eof())
        c2 = self.connect()
        self.assertEqual(c2.read(0, 512), (0, b'x' * 512))

    def test_protocol_errors_close(self):
        self.expect_errors('protocol error')
        bad = [
            # request before HELLO
            raw_request(1, p.OP_READ, 0, 512),
            # HELLO with a nonzero handle
            header(p.TYPE_HELLO, 7, 40) +
            p.HELLO.pack(1, 1, 0, 0, 65536, 64, 0),
            # HELLO with max_inflight 0
            header(p.TYPE_HELLO, 0, 40) +
            p.HELLO.pack(1, 1, 0, 0, 65536, 0, 0),
            # HELLO with max_data beyond 16 MiB
            header(p.TYPE_HELLO, 0, 40) +
            p.HELLO.pack(1, 1, 0, 0, 32 << 20, 64, 0),
        ]
        for wire in bad:
            client = self.raw()
            client.send_raw(wire)
            self.assertTrue(client.expect_eof())
        # a read beyond the end
        c = self.connect()
        c.send_raw(raw_request(1, p.OP_READ, MiB, 512))
        self.assertTrue(c.expect_eof())
        # a LOWER_REPLY nobody asked for
        c = self.connect()
        c.send_raw(header(p.TYPE_LOWER_REPLY, 9, 16) + bytes(16))
        self.assertTrue(c.expect_eof())
        # REPLAY on a message other than REQUEST
        c = self.connect()
        c.send_raw(header(p.TYPE_LOWER_REPLY, 9, 16, p.FLAG_REPLAY) +
                   bytes(16))
        self.assertTrue(c.expect_eof())
        # a second HELLO
        c = self.connect()
        c.send_raw(header(p.TYPE_HELLO, 0, 40) +
                   p.HELLO.pack(1, 1, 0, 0, 65536, 64, 0))
        self.assertTrue(c.expect_eof())
        self.assertEqual(self.connect().flush(), (0, b''))

    def test_more_than_max_inflight(self):
        self.expect_errors('more requests outstanding than max_inflight')
        c = self.connect(max_inflight=2)
        self.assertEqual(c.max_inflight, 2)
        c.send_raw(b''.join(raw_request(h, p.OP_READ, 0, 512,
                                        slot=h - 1 if self.shm else 0)
                            for h in (1, 2)) +
                   raw_request(3, p.OP_READ, 0, 512, slot=0))
        self.assertTrue(c.expect_eof())

    def test_duplicate_handle(self):
        self.expect_errors('REQUEST handle is already outstanding')
        c = self.connect()
        c.send_raw(raw_request(5, p.OP_READ, 0, 512) +
                   raw_request(5, p.OP_READ, 512, 512,
                               slot=1 if self.shm else 0))
        self.assertTrue(c.expect_eof())

    def test_socket_mode(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)


class RamdiskShmTest(RamdiskTest):
    shm = True

    def test_data_lives_in_the_slots(self):
        c = self.connect(max_inflight=4)
        self.assertEqual(len(c.shm), 4 * c.max_data)
        data = os.urandom(4096)
        self.assertEqual(c.write(8192, data), (0, b''))
        self.assertEqual(c.read(8192, 4096), (0, data))
        # every message was a bare descriptor
        replies = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual(len(replies), 2)

    def test_inline_data_with_shm(self):
        self.expect_errors('request data does not match its length')
        c = self.connect()
        c.send_raw(raw_request(1, p.OP_WRITE, 0, 512, data=bytes(512)))
        self.assertTrue(c.expect_eof())

    def test_slot_errors(self):
        self.expect_errors('request slot out of range',
                           'REQUEST slot is in use by an outstanding request')
        c = self.connect(max_inflight=4)
        c.send_raw(raw_request(1, p.OP_READ, 0, 512, slot=4))
        self.assertTrue(c.expect_eof())
        c = self.connect(max_inflight=4)
        c.send_raw(raw_request(1, p.OP_READ, 0, 512, slot=2) +
                   raw_request(2, p.OP_READ, 512, 512, slot=2))
        self.assertTrue(c.expect_eof())

    def shm_client(self, max_inflight=4):
        c = self.connect(max_inflight=max_inflight, shm_setup=False)
        self.assertTrue(c.features & p.F_SHM)
        return c

    def test_shm_setup_errors(self):
        self.expect_errors('SHM_SETUP without a file descriptor',
                           'more than one file descriptor with SHM_SETUP',
                           'shared memory is smaller than its slots and '
                           'rings',
                           'SHM_SETUP geometry differs from the handshake',
                           'reserved SHM_SETUP field set',
                           'expected SHM_SETUP',
                           'file descriptor with a message other than '
                           'SHM_SETUP')
        size = 4 * p.MIN_MAX_DATA
        cases = [
            (shm_setup(4, p.MIN_MAX_DATA), []),
            (shm_setup(4, p.MIN_MAX_DATA), [size, size]),
            (shm_setup(4, p.MIN_MAX_DATA), [size - 1]),
            (shm_setup(8, p.MIN_MAX_DATA), [8 * p.MIN_MAX_DATA]),
            (shm_setup(4, p.MIN_MAX_DATA, 1), [size]),
            (raw_request(1, p.OP_READ, 0, 512), []),
        ]
        for wire, sizes in cases:
            with self.subTest(wire=wire.hex(), sizes=sizes):
                c = self.shm_client()
                fds = [memfd(s) for s in sizes]
                try:
                    c.send_raw(wire, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
                self.assertTrue(c.expect_eof())
        # a file descriptor with HELLO
        c = self.raw()
        fd = memfd(4096)
        c.send_raw(header(p.TYPE_HELLO, 0, 40) +
                   p.HELLO.pack(1, 1, p.F_SHM, 0, 65536, 4, 0), [fd])
        os.close(fd)
        self.assertTrue(c.expect_eof())
        # the device still serves a good client
        self.assertEqual(self.connect().write(0, b'ok' * 256), (0, b''))

    def test_shm_setup_in_time(self):
        if type(self) is not RamdiskShmTest:
            self.skipTest('takes 10 s, once is enough')
        self.expect_errors('no SHM_SETUP in time')
        c = self.shm_client()
        c.sock.settimeout(20)
        self.assertTrue(c.expect_eof())


class RamdiskSerialTest(RamdiskShmTest):
    """The ramdisk with its callbacks run in the reading thread"""
    args = ('size=1M', 'threads=serialize')


class RamdiskSerialInlineTest(RamdiskTest):
    args = ('size=1M', 'threads=serialize')


class XorTest(ExampleTest):
    example = 'xor'
    args = ('key=0x5a',)

    def test_lower_holds_xored_data(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.features,
                         p.F_ZEROES | p.F_FUA | p.F_LOWER | p.F_DISCARD |
                         self.shm_bit())
        self.assertEqual(c.size, MiB)
        self.assertEqual(c.hello_reply.size, 0)
        data = os.urandom(3 * 65536)    # split into max_data pieces
        for i in range(3):
            self.assertEqual(c.write(512 + i * 65536,
                                     data[i * 65536:(i + 1) * 65536],
                                     fua=True), (0, b''))
        self.assertEqual(bytes(lower[512:512 + len(data)]),
                         bytes(b ^ 0x5a for b in data))
        self.assertEqual(c.read(512, 65536), (0, data[:65536]))
        self.assertEqual(c.read(0, 512), (0, bytes([0x5a]) * 512))
        fua_writes = [op for op in c.lower_ops if op[0] == p.OP_WRITE]
        self.assertTrue(all(op[3] == p.REQ_FUA for op in fua_writes))

    def test_batched_io(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        check_io(c, rounds=2, count=32)

    def test_read_below(self):
        """SOFTDEV_READ_BELOW: with shared memory a READ comes with the
        data below (flag BELOW) and the device decodes it with no
        LOWER_REQUEST; without, the library reads below first."""
        lower = bytearray(MiB)
        c = self.connect(lower, features=p.F_ZEROES | p.F_FUA | p.F_LOWER |
                         p.F_READ_BELOW)
        self.assertEqual(bool(c.features & p.F_READ_BELOW), self.shm)
        data = os.urandom(3 * 4096)
        self.assertEqual(c.write(8192, data), (0, b''))
        lower[8192 + 4096:8192 + 8192] = bytes(b ^ 0x5a for b in b'Q' * 4096)
        c.received.clear()
        handles = [c.submit(p.OP_READ, 8192 + i * 4096, 4096)
                   for i in range(3)]
        self.assertEqual(c.collect_all(handles),
                         [(0, data[:4096]), (0, b'Q' * 4096),
                          (0, data[8192:])])
        lowers = [m for m in c.received if isinstance(m, p.LowerRequest)]
        self.assertEqual(len(lowers), 0 if self.shm else 3)
        # A read whose data below failed to come fails
        c.lower_errors[p.OP_READ] = errno.EIO
        self.assertEqual(c.read(0, 4096), (-errno.EIO, b''))

    def test_write_zeroes(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.write_zeroes(1000, 70000), (0, b''))
        self.assertEqual(bytes(lower[1000:71000]), bytes([0x5a]) * 70000)
        self.assertEqual(c.read(1000, 65536), (0, bytes(65536)))

    def test_flush_and_discard_not_negotiated(self):
        lower = bytearray(b'\1' * MiB)
        c = self.connect(lower)
        self.assertEqual(c.flush(), (0, b''))
        self.assertEqual(c.flushes, 1)
        self.assertEqual(c.discard(0, 4096), (0, b''))
        self.assertEqual(bytes(lower[:4096]), bytes(4096))

    def test_errno_propagation(self):
        c = self.connect(bytearray(MiB))
        c.lower_errors[p.OP_READ] = errno.EIO
        c.lower_errors[p.OP_WRITE] = errno.ENOSPC
        self.assertEqual(c.read(0, 512), (-errno.EIO, b''))
        self.assertEqual(c.write(0, b'a' * 512), (-errno.ENOSPC, b''))

    def test_duplicate_handle(self):
        self.expect_errors('REQUEST handle is already outstanding')
        c = self.connect(bytearray(MiB))
        # the first READ waits for a LOWER_REPLY that is never sent
        c.send_raw(raw_request(5, p.OP_READ, 0, 512))
        c.send_raw(raw_request(5, p.OP_READ, 0, 512,
                               slot=1 if self.shm else 0))
        self.assertTrue(c.expect_eof())
        self.assertEqual(self.connect(bytearray(MiB)).read(0, 512),
                         (0, bytes([0x5a]) * 512))

    def test_lower_reply_errors(self):
        self.expect_errors('LOWER_REPLY to a handle that is not outstanding',
                           'reply data does not match')
        c = self.connect(bytearray(MiB))
        c.send_raw(raw_request(1, p.OP_READ, 0, 512))
        # the device asks the node below; answer with the wrong size
        msgs = []
        while not msgs:
            msgs = c.decoder.feed(c.sock.recv(4096))
        lreq = msgs[0]
        self.assertIsInstance(lreq, p.LowerRequest)
        c.send_raw(header(p.TYPE_LOWER_REPLY, lreq.handle, 16 + 4) +
                   p.LOWER_REPLY.pack(0, 0, 4) + b'abcd')
        self.assertTrue(c.expect_eof())
        c = self.connect(bytearray(MiB))
        c.send_raw(header(p.TYPE_LOWER_REPLY, 77, 16) +
                   p.LOWER_REPLY.pack(0, 0, 0))
        self.assertTrue(c.expect_eof())

    def test_no_lower_node(self):
        self.expect_errors('the device has no size and there is no node '
                           'below')
        # size comes from the node below: without one, no handshake
        client = self.raw()
        client.send_raw(header(p.TYPE_HELLO, 0, 40) +
                        p.HELLO.pack(1, 1, 0, 0, 65536, 64, 0))
        self.assertTrue(client.expect_eof())
        self.connect(bytearray(MiB))

    def test_empty_lower_node(self):
        # F_LOWER offered with size 0: a device of size 0
        c = self.connect(bytearray(0), features=p.F_ALL)
        self.assertTrue(c.features & p.F_LOWER)
        self.assertEqual(c.size, 0)
        self.assertEqual(c.hello_reply.size, 0)
        self.assertEqual(c.flush(), (0, b''))


class XorShmTest(XorTest):
    shm = True


class PassthroughTest(ExampleTest):
    example = 'passthrough'

    def test_passthrough(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.features, p.F_LOWER | p.F_FUA | p.F_DISCARD |
                         p.F_ZEROES | self.shm_bit())
        data = os.urandom(65536)
        self.assertEqual(c.write(12345, data, fua=True), (0, b''))
        self.assertEqual(bytes(lower[12345:12345 + 65536]), data)
        self.assertEqual(c.read(12345, 65536), (0, data))
        self.assertEqual(c.flush(), (0, b''))
        self.assertEqual(c.flushes, 1)
        replies = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual(len(replies), 2)
        self.assertTrue(all(m.action == p.ACTION_FORWARD for m in replies))
        self.assertIn((p.OP_WRITE, 12345, 65536, p.REQ_FUA), c.lower_ops)
        # discards and write-zeroes pass through the device as they are
        c.lower_ops.clear()
        self.assertEqual(c.discard(4096, 4096), (0, b''))
        self.assertEqual(c.write_zeroes(12288, 4096, may_unmap=True),
                         (0, b''))
        self.assertEqual(c.lower_ops,
                         [(p.OP_DISCARD, 4096, 4096, 0),
                          (p.OP_WRITE_ZEROES, 12288, 4096, p.REQ_MAY_UNMAP)])

    def test_batched_io(self):
        lower = bytearray(MiB)
        c = self.connect(lower, max_inflight=128)
        check_io(c, rounds=3, count=100)

    def test_errno_propagation(self):
        c = self.connect(bytearray(MiB))
        c.lower_errors[p.OP_WRITE] = errno.EROFS
        self.assertEqual(c.write(0, b'a' * 512), (-errno.EROFS, b''))

    def test_reconnect(self):
        lower = bytearray(MiB)
        for i in range(3):
            c = self.connect(lower)
            self.assertEqual(c.write(i * 512, bytes([i + 1]) * 512),
                             (0, b''))
            c.close()
        self.assertEqual(bytes(lower[:1536]),
                         b'\1' * 512 + b'\2' * 512 + b'\3' * 512)

    def test_forward_without_lower_offered(self):
        # no node below and no size: the handshake fails
        self.expect_errors('no node below')
        c = self.raw()
        c.send_raw(header(p.TYPE_HELLO, 0, 40) +
                   p.HELLO.pack(1, 1, p.F_ALL & ~p.F_LOWER, 0, 65536, 64, 0))
        self.assertTrue(c.expect_eof())


class PassthroughShmTest(PassthroughTest):
    shm = True


class PassthroughNoShmOptionTest(PassthroughTest):
    """--no-shm: the client offers SHM, the device declines it"""
    options = ('--no-shm',)

    def test_shm_declined(self):
        c = TestClient.connect_unix(self.path, lower=bytearray(MiB), shm=True)
        self.clients.append(c)
        c.handshake()
        self.assertFalse(c.features & p.F_SHM)
        self.assertFalse(c.shm_active)
        self.assertEqual(c.write(0, b'q' * 512), (0, b''))


class RingTests:
    """Requests and replies through the rings (SOFTDEV_TAP_F_RING)"""
    shm = True
    ring = True
    lower = None

    def ring_client(self, **kwargs):
        lower = bytearray(MiB) if self.lower else None
        c = self.connect(lower, **kwargs)
        self.assertTrue(c.features & p.F_RING)
        self.assertTrue(c.ring_active)
        return c

    def test_io_through_the_rings(self):
        c = self.ring_client(max_inflight=32)
        self.assertEqual(c.ring_entries, 32)
        check_io(c, rounds=3, count=40)
        # every reply came from the ring (one on the socket would have
        # been a protocol error).  Whether KICKs came depends on when the
        # client looked: test_kick_wakes_a_sleeping_client checks them.
        self.assertGreater(len([m for m in c.received
                                if isinstance(m, p.Reply)]), 100)

    def test_kick_wakes_a_sleeping_client(self):
        # What the protocol guarantees: a client that set its idle word
        # before the device posts a reply is KICKed, so it may sleep on
        # the socket without looking at the ring.  (Whether a client
        # that polls gets KICKs depends on timing, so check only this.)
        c = self.ring_client(max_inflight=4)
        for i in range(3):
            before = c.kicks
            c._put_word(p.RING_CLI_IDLE, 1)
            h = c.submit(p.OP_WRITE, i * 512, 512, bytes([i + 1]) * 512)
            while c.kicks == before:
                c._read_socket()        # blocks (timeout: no KICK came)
            self.assertEqual(c._word(p.RING_CLI_IDLE), 0)
            self.assertTrue(c._reap())
            self.assertEqual(c.collect(h), (0, b''))
        self.assertEqual(c.read(0, 1536),
                         (0, b'\1' * 512 + b'\2' * 512 + b'\3' * 512))

    def test_ring_geometry_rounds_up(self):
        c = self.ring_client(max_inflight=5)
        self.assertEqual(c.ring_entries, 8)
        self.assertEqual(len(c.shm), 5 * c.max_data + 4096 + 2 * 8 * 64)
        check_io(c, rounds=2, count=8)

    def test_declined_without_shm(self):
        c = self.connect(bytearray(MiB) if self.lower else None, shm=False,
                         features=p.F_RING | p.F_LOWER)
        self.assertFalse(c.features & (p.F_RING | p.F_SHM))
        self.assertEqual(c.write(0, b'r' * 512), (0, b''))

    def test_broken_ring_entries(self):
        self.expect_errors('bad magic',
                           'message longer than the negotiated maximum',
                           'ring entry is not a REQUEST',
                           'request slot out of range',
                           'request ring index out of range',
                           'more requests outstanding than max_inflight',
                           'unexpected message type from the client',
                           'malformed KICK')
        good = raw_request(1, p.OP_READ, 0, 512)
        cases = [
            b'\0' * 48,
            raw_request(1, p.OP_WRITE, 0, 512, data=bytes(8)),
            header(p.TYPE_REPLY, 1, 24) + p.REPLY.pack(0, 0, 0, 0),
            raw_request(1, p.OP_READ, 0, 512, slot=4),
        ]
        for wire in cases:
            with self.subTest(wire=wire.hex()):
                c = self.ring_client(max_inflight=4)
                c.ring_post(wire)
                c._flush()
                self.assertTrue(c.expect_eof())
        with self.subTest('producer index far ahead'):
            c = self.ring_client(max_inflight=4)
            c.ring_set_prod(5)
            self.assertTrue(c.expect_eof())
        with self.subTest('more than max_inflight'):
            c = self.ring_client(max_inflight=3)     # 4 ring entries
            for h in (1, 2, 3, 4):
                c.ring_post(raw_request(h, p.OP_READ, 0, 512, slot=h % 3),
                            kick=False)
            c.ring_set_prod(4)
            self.assertTrue(c.expect_eof())
        with self.subTest('REQUEST on the socket'):
            c = self.ring_client(max_inflight=4)
            c.send_raw(good)
            self.assertTrue(c.expect_eof())
        with self.subTest('KICK with a payload'):
            c = self.ring_client(max_inflight=4)
            c.send_raw(header(p.TYPE_KICK, 0, 4) + bytes(4))
            self.assertTrue(c.expect_eof())
        # the device still serves a good client
        check_io(self.ring_client(max_inflight=4), rounds=1, count=4)

    def test_ring_shm_setup_errors(self):
        self.expect_errors('ring_entries is not a power of two from slots '
                           'to 1024',
                           'SHM_SETUP without rings for SOFTDEV_TAP_F_RING',
                           'shared memory is smaller than its slots and '
                           'rings')
        slots = 4 * p.MIN_MAX_DATA
        rings = 4096 + 2 * 4 * 64
        for wire, size in ((shm_setup(4, p.MIN_MAX_DATA, 2), slots + rings),
                           (shm_setup(4, p.MIN_MAX_DATA, 6), slots + rings),
                           (shm_setup(4, p.MIN_MAX_DATA, 2048), 8 * MiB),
                           (shm_setup(4, p.MIN_MAX_DATA, 0), slots + rings),
                           (shm_setup(4, p.MIN_MAX_DATA, 4),
                            slots + rings - 1)):
            with self.subTest(wire=wire.hex(), size=size):
                c = self.connect(bytearray(MiB) if self.lower else None,
                                 max_inflight=4, shm_setup=False)
                self.assertTrue(c.features & p.F_RING)
                fd = memfd(size)
                try:
                    c.send_raw(wire, [fd])
                finally:
                    os.close(fd)
                self.assertTrue(c.expect_eof())


class RamdiskRingTest(RingTests, ExampleTest):
    example = 'ramdisk'
    args = ('size=1M',)


class RamdiskRingSerialTest(RamdiskRingTest):
    args = ('size=1M', 'threads=serialize')

    def test_busy_polling(self):
        # --poll-us: the device looks at the ring, not the socket
        self.dev.stop()
        self.dev = DeviceProcess(self.argv('--poll-us', '200'), self.path)
        c = self.ring_client(max_inflight=16)
        check_io(c, rounds=2, count=16)


class XorRingTest(RingTests, ExampleTest):
    """LOWER_REQUESTs stay socket messages beside the rings"""
    example = 'xor'
    args = ('key=0x5a',)
    lower = True

    def test_lower_requests_beside_the_rings(self):
        c = self.ring_client(max_inflight=8,
                             features=p.F_LOWER | p.F_FUA | p.F_ZEROES |
                             p.F_NO_WRITE_DATA | p.F_EARLY_READ |
                             p.F_EARLY_WRITE)
        # it reads the data, changes it and writes below: no promise holds
        self.assertFalse(c.features & (p.F_NO_WRITE_DATA | p.F_EARLY_READ |
                                       p.F_EARLY_WRITE))
        data = os.urandom(8192)
        self.assertEqual(c.write(4096, data), (0, b''))
        self.assertEqual(c.read(4096, 8192), (0, data))
        self.assertEqual(bytes(c.lower[4096:4096 + 8192]),
                         bytes(b ^ 0x5a for b in data))


class PassthroughRingTest(RingTests, ExampleTest):
    example = 'passthrough'
    lower = True

    def test_no_write_data(self):
        # its write callback does not read the data, and says so
        c = self.ring_client(features=p.F_LOWER | p.F_FUA |
                             p.F_NO_WRITE_DATA | p.F_EARLY_READ |
                             p.F_EARLY_WRITE)
        self.assertTrue(c.features & p.F_NO_WRITE_DATA)
        # and it leaves the node below alone: reads may start early
        self.assertTrue(c.features & p.F_EARLY_READ)
        # and it forwards writes unchanged: writes may start early
        self.assertTrue(c.features & p.F_EARLY_WRITE)
        data = os.urandom(4096)
        self.assertEqual(c.write(0, data), (0, b''))
        self.assertEqual(bytes(c.lower[:4096]), data)
        replies = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual(replies[-1].action, p.ACTION_FORWARD)
        self.assertEqual(replies[-1].data, b'')


class TestDeviceTest(ExampleTest):
    """Runs tests/unit/devices/EXAMPLE.c, linked with libsoftdev.a"""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # as libsoftdev/build.sh builds the library it links with
        sanitize = (['-fsanitize=address,undefined',
                     '-fno-sanitize-recover=all']
                    if os.environ.get('SANITIZE') == '1' else [])
        subprocess.run([os.environ.get('CC', 'gcc'), '-std=gnu11', '-Wall',
                        '-Wextra', '-Werror', '-pthread', *sanitize,
                        '-I' + os.path.join(SRC, 'include'),
                        '-I' + os.path.join(SRC, 'libsoftdev'),
                        os.path.join(SRC, 'tests', 'unit', 'devices',
                                     cls.example + '.c'),
                        os.path.join(OUT, 'libsoftdev.a'),
                        '-o', os.path.join(OUT, cls.example)], check=True)


class EarlyWriteBreakerTest(TestDeviceTest):
    """SOFTDEV_EARLY_WRITE: a write callback that breaks the promise has
    its write failed with -EIO (the client may have written it below)"""
    example = 'early-write-breaker'
    shm = True
    ring = True

    def test_promise_enforced(self):
        self.expect_errors('although the device declared '
                           'SOFTDEV_EARLY_WRITE')
        lower = bytearray(MiB)
        c = self.connect(lower, features=p.F_LOWER | p.F_NO_WRITE_DATA |
                         p.F_EARLY_WRITE)
        self.assertTrue(c.features & p.F_EARLY_WRITE)
        data = b'w' * 4096
        # kept, completed, moved, changed, failed (see the device)
        self.assertEqual([c.write(i * 4096, data)[0] for i in range(5)],
                         [0, -errno.EIO, -errno.EIO, -errno.EIO,
                          -errno.ENOSPC])
        replies = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual([m.action for m in replies],
                         [p.ACTION_FORWARD] + [p.ACTION_COMPLETE] * 4)
        self.assertEqual(bytes(lower[:4096]), data)
        self.assertEqual(bytes(lower[4096:]), bytes(MiB - 4096))

    def test_not_offered(self):
        # without the bit the callback's answers stand as they are
        lower = bytearray(MiB)
        c = self.connect(lower, features=p.F_LOWER | p.F_NO_WRITE_DATA)
        self.assertFalse(c.features & p.F_EARLY_WRITE)
        data = b'v' * 4096
        self.assertEqual(c.write(4096, data), (0, b''))     # completed
        self.assertEqual(c.write(8192, data), (0, b''))     # moved
        self.assertEqual(bytes(lower[4096:8192]), bytes(4096))
        self.assertEqual(bytes(lower[8192 + 65536:12288 + 65536]), data)


class WriteBlockerTest(TestDeviceTest):
    """A device with only a write callback (it refuses the first MiB):
    write-zeroes reach it as data, discards do not reach the node below"""
    example = 'write-blocker'

    def test_write_zeroes_reach_write(self):
        lower = bytearray(b'\xee' * (4 * MiB))
        c = self.connect(lower)
        self.assertEqual(c.features & (p.F_ZEROES | p.F_DISCARD), 0)
        self.assertEqual(c.write_zeroes(0, 4096, may_unmap=True),
                         (-errno.EPERM, b''))
        self.assertEqual(c.write_zeroes(MiB - 512, 1024),
                         (-errno.EPERM, b''))
        self.assertEqual(bytes(lower[:MiB + 512]), b'\xee' * (MiB + 512))
        c.lower_ops.clear()
        self.assertEqual(c.write_zeroes(2 * MiB, MiB + 4096), (0, b''))
        self.assertEqual(bytes(lower[2 * MiB:3 * MiB + 4096]),
                         bytes(MiB + 4096))
        self.assertEqual({op for op, _, _, _ in c.lower_ops}, {p.OP_WRITE})

    def test_discards_are_dropped(self):
        lower = bytearray(b'\xee' * (2 * MiB))
        c = self.connect(lower)
        c.lower_ops.clear()
        self.assertEqual(c.discard(0, 2 * MiB), (0, b''))
        self.assertEqual(c.lower_ops, [])
        self.assertEqual(bytes(lower), b'\xee' * (2 * MiB))


class WriteBlockerShmTest(WriteBlockerTest):
    shm = True
    ring = True


class PassingWriteBlockerTest(TestDeviceTest):
    """SOFTDEV_DISCARD_PASSES: discards are forwarded unchanged"""
    example = 'write-blocker'
    args = ('discard=pass',)

    def test_discards_pass(self):
        lower = bytearray(b'\xee' * (2 * MiB))
        c = self.connect(lower)
        self.assertEqual(c.features & (p.F_ZEROES | p.F_DISCARD),
                         p.F_DISCARD)
        c.lower_ops.clear()
        self.assertEqual(c.discard(0, 4096), (0, b''))
        self.assertEqual(c.lower_ops, [(p.OP_DISCARD, 0, 4096, 0)])
        # zeroes are still data the write callback judges
        self.assertEqual(c.write_zeroes(0, 4096), (-errno.EPERM, b''))


class PassthroughNoRingOptionTest(PassthroughTest):
    """--no-ring: shared memory for the data, messages for the rest"""
    options = ('--no-ring',)
    shm = True
    ring = True

    def test_passthrough(self):
        super().test_passthrough()
        self.assertFalse(self.clients[-1].ring_active)


class LoggerTest(ExampleTest):
    example = 'logger'
    shm = True

    def setUp(self):
        self.log_path = None
        super().setUp()

    def argv(self, *extra):
        self.log_path = os.path.join(self.tmp.name, 'writes.log')
        return super().argv(f'path={self.log_path}', *extra)

    def log(self):
        with open(self.log_path) as f:
            return [line.split()[1:] for line in f]

    def test_replay_flag(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.write(0, b'a' * 512, fua=True), (0, b''))
        c.close()
        # a new connection replays a request of the old one
        c = self.connect(lower)
        h = c.submit(p.OP_WRITE, 0, 512, b'a' * 512, p.REQ_FUA, handle=1,
                     replay=True)
        self.assertEqual(c.collect(h), (0, b''))
        self.assertEqual(c.write(512, b'b' * 1024), (0, b''))
        self.assertEqual(self.log(), [
            ['write', '0', '512', 'fua'],
            ['write', '0', '512', 'fua', 'replay'],
            ['write', '512', '1024'],
        ])
        self.assertEqual(bytes(lower[:1536]), b'a' * 512 + b'b' * 1024)

    def stop_with(self, sig, connected):
        """@sig stops the server (with a client connected or not): it
        closes the device (the log's last line) and exits with 0"""
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.write(0, b'a' * 512), (0, b''))
        if not connected:
            c.close()
            self.clients.remove(c)
        self.dev.proc.send_signal(sig)
        self.assertEqual(self.dev.proc.wait(10), 0)
        self.assertEqual(self.log(), [['write', '0', '512'], ['close']])
        if connected:
            self.assertTrue(c.expect_eof())

    def test_sigterm_closes_the_device(self):
        self.stop_with(signal.SIGTERM, connected=True)

    def test_sigint_closes_the_device(self):
        self.stop_with(signal.SIGINT, connected=False)

    def test_sigterm_as_soon_as_the_socket_exists(self):
        """A script that stops the device once its socket appears: the
        device must already catch SIGTERM then (close it, remove the
        socket, exit with 0), however soon the signal comes."""
        for i in range(40):
            path = os.path.join(self.tmp.name, 'early%d.sock' % i)
            log = os.path.join(self.tmp.name, 'early%d.log' % i)
            proc = subprocess.Popen(
                [os.path.join(OUT, self.example), '--unix', path,
                 'path=' + log], stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not os.path.exists(path):
                self.assertLess(time.monotonic(), deadline)
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(10), 0, 'round %d' % i)
            self.assertFalse(os.path.exists(path),
                             'round %d left the socket behind' % i)
            with open(log) as f:
                self.assertEqual(f.read().split()[-1:], ['close'])


class LoggerMaxInflightTest(LoggerTest):
    args = ('max-inflight=4',)

    def test_max_inflight(self):
        lower = bytearray(MiB)
        c = self.connect(lower)             # offers 64
        self.assertEqual(c.hello_reply.max_inflight, 4)
        self.assertEqual(c.max_inflight, 4)
        self.assertEqual(len(c.shm), 4 * c.max_data)
        check_io(c, rounds=2, count=16)   # waits for room
        c.close()
        c = self.connect(lower, max_inflight=2)
        self.assertEqual(c.hello_reply.max_inflight, 0)     # the client's
        self.assertEqual(c.max_inflight, 2)

    def test_more_than_max_inflight(self):
        self.expect_errors('more requests outstanding than max_inflight')
        c = self.connect(bytearray(MiB), shm=False)
        c.send_raw(b''.join(raw_request(h, p.OP_WRITE, 0, 512,
                                        data=bytes(512))
                            for h in range(1, 6)))
        self.assertTrue(c.expect_eof())


class RunnerRamdiskTest(RamdiskShmTest):
    """The same tests on ramdisk.so loaded by softdev-run"""
    runner = True


class RunnerPassthroughTest(PassthroughTest):
    runner = True


class RunnerXorTest(XorShmTest):
    runner = True


class ProcessTest(unittest.TestCase):
    """Devices started by each test, with other options"""

    @classmethod
    def setUpClass(cls):
        build()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.path = os.path.join(self.tmp.name, 'dev.sock')

    def start(self, *argv, path=None, wait_for=None):
        dev = DeviceProcess([os.path.join(OUT, argv[0]), *argv[1:]],
                            path=path, wait_for=wait_for)
        self.addCleanup(self.stopped, dev)
        return dev

    def stopped(self, dev):
        stderr = dev.stop()
        for bad in BAD_OUTPUT:
            self.assertNotIn(bad, stderr)

    def run_tool(self, *argv):
        return subprocess.run([os.path.join(OUT, argv[0]), *argv[1:]],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)


class OptionsTest(ProcessTest):
    def test_allow_uid(self):
        uid = os.getuid()
        dev = self.start('passthrough', '--unix', self.path, '--allow-uid',
                         f'{uid + 1},{uid}', path=self.path)
        c = TestClient.connect_unix(self.path, lower=bytearray(MiB))
        c.handshake()
        self.assertEqual(c.write(0, b'u' * 512), (0, b''))
        c.close()
        dev.stop()
        self.assertNotIn('refusing', dev.stderr)

    def test_allow_uid_refuses(self):
        uid = os.getuid()
        dev = self.start('passthrough', '--unix', self.path, '--allow-uid',
                         f'{uid + 1},{uid + 2}', path=self.path)
        c = TestClient.connect_unix(self.path, lower=bytearray(MiB))
        with self.assertRaises((ConnectionError, OSError)):
            c.handshake()
        c.close()
        dev.stop()
        self.assertIn(f'refusing a connection from uid {uid} (pid '
                      f'{os.getpid()}): not in --allow-uid', dev.stderr)

    def test_usage_errors(self):
        cases = [
            ((), 'usage:'),
            (('--unix', self.path, '--tcp', '127.0.0.1:0'),
             'give one of --unix, --tcp, --vsock and --fd'),
            (('--tcp', '127.0.0.1:0', '--allow-uid', '0'),
             '--allow-uid works on unix sockets only'),
            (('--unix', self.path, '--allow-uid', 'root'),
             '--allow-uid wants UID[,UID...]'),
            (('--tcp', 'nocolon'), '--tcp wants HOST:PORT'),
            (('--unix', self.path, '--poll-us', '-1'),
             '--poll-us takes 0 to 1000000'),
            (('--unix', self.path, '--poll-us', '1000001'),
             '--poll-us takes 0 to 1000000'),
        ]
        for args, msg in cases:
            with self.subTest(args=args):
                r = self.run_tool('passthrough', *args)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(msg, r.stderr)
        r = self.run_tool('passthrough', '--help')
        self.assertEqual(r.returncode, 0)
        self.assertIn('--allow-uid', r.stdout)
        self.assertIn('--poll-us', r.stdout)

    def test_poll_us(self):
        """--poll-us: the serialize loop busy-polls, and still serves
        batches and single requests, and sees the client leave"""
        dev = self.start('passthrough', '--unix', self.path, '--poll-us',
                         '2000', path=self.path)
        c = TestClient.connect_unix(self.path, lower=bytearray(MiB),
                                    shm=True)
        c.handshake()
        check_io(c, rounds=3, count=32)
        time.sleep(0.01)            # past the polling window: sleeps
        self.assertEqual(c.write(0, b'p' * 512), (0, b''))
        c.close()
        dev.stop()

    def test_default_polling_goes_idle(self):
        """By default the device polls while requests come (see
        libsoftdev-poll-test.c for the window), and stops once they stop:
        an idle device, still connected, costs no CPU"""
        dev = self.start('passthrough', '--unix', self.path, path=self.path)
        c = TestClient.connect_unix(self.path, lower=bytearray(MiB),
                                    shm=True, ring=True)
        c.handshake()
        self.assertTrue(c.ring_active)
        check_io(c, rounds=4, count=32)

        def cpu_seconds():
            with open(f'/proc/{dev.proc.pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / \
                os.sysconf('SC_CLK_TCK')

        time.sleep(0.2)
        before = cpu_seconds()
        time.sleep(1.0)
        # A device that kept polling would show about a second
        self.assertLess(cpu_seconds() - before, 0.2)
        # and it still answers, woken by a KICK
        self.assertEqual(c.write(0, b'q' * 512), (0, b''))
        self.assertEqual(c.read(0, 512), (0, b'q' * 512))
        c.close()
        dev.stop()

    def test_tcp(self):
        dev = self.start('ramdisk', '--tcp', '127.0.0.1:0', 'size=1M',
                         wait_for='line')
        m = re.search(r'listening on 127\.0\.0\.1:(\d+)', dev.first_line)
        self.assertTrue(m, dev.first_line)
        sock = socket.create_connection(('127.0.0.1', int(m.group(1))),
                                        timeout=5)
        c = TestClient(sock, shm=True)      # offered, but not over TCP
        c.handshake()
        self.assertFalse(c.features & p.F_SHM)
        self.assertEqual(c.size, MiB)
        check_io(c, rounds=2, count=16)
        c.close()
        # the next client after the first one went away
        sock = socket.create_connection(('127.0.0.1', int(m.group(1))),
                                        timeout=5)
        c = TestClient(sock)
        c.handshake()
        self.assertEqual(c.flush(), (0, b''))
        c.close()

    def test_vsock(self):
        try:
            s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            s.bind((socket.VMADDR_CID_ANY, 0))
            s.close()
        except (AttributeError, OSError) as e:
            self.skipTest(f'no vsock here: {e}')
        port = 40000 + os.getpid() % 20000
        dev = self.start('ramdisk', '--vsock', f'-1:{port}', 'size=1M')
        # Until it listens: refused while it starts (however slowly), any
        # other error means there is no vsock loopback here
        deadline = time.monotonic() + 10
        while True:
            self.assertIsNone(dev.proc.poll())
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect((1, port))         # VMADDR_CID_LOCAL
                break
            except ConnectionRefusedError:
                sock.close()
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
            except OSError as e:
                sock.close()
                self.skipTest(f'no vsock loopback here: {e}')
        sock.settimeout(5)
        c = TestClient(sock, shm=True)
        c.handshake()
        self.assertFalse(c.features & p.F_SHM)
        self.assertEqual(c.write(0, b'v' * 512), (0, b''))
        self.assertEqual(c.read(0, 512), (0, b'v' * 512))
        c.close()

    def test_fd(self):
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(
            [os.path.join(OUT, 'ramdisk'), '--fd', str(theirs.fileno()),
             'size=1M', 'threads=serialize'],
            pass_fds=[theirs.fileno()], stderr=subprocess.PIPE)
        theirs.close()
        c = TestClient(ours, shm=True)
        c.handshake()
        self.assertTrue(c.shm_active)
        check_io(c, rounds=2, count=16)
        c.close()
        self.assertEqual(proc.wait(10), 0)
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        for bad in BAD_OUTPUT:
            self.assertNotIn(bad, stderr)


class RunnerTest(ProcessTest):
    def test_runner_errors(self):
        r = self.run_tool('softdev-run')
        self.assertEqual(r.returncode, 2)
        self.assertIn('usage: softdev-run DEVICE.so', r.stderr)
        r = self.run_tool('softdev-run', os.path.join(self.tmp.name, 'no.so'),
                          '--unix', self.path)
        self.assertEqual(r.returncode, 1)
        self.assertIn('cannot load', r.stderr)
        # an object without softdev_device_get()
        r = self.run_tool('softdev-run', os.path.join(OUT, 'libsoftdev.so.1'),
                          '--unix', self.path)
        self.assertEqual(r.returncode, 1)
        self.assertIn('has no softdev_device_get()', r.stderr)

    def test_runner_passes_arguments(self):
        dev = self.start('softdev-run', os.path.join(OUT, 'ramdisk.so'),
                         '--unix', self.path, 'size=2M', path=self.path)
        c = TestClient.connect_unix(self.path, shm=True)
        c.handshake()
        self.assertEqual(c.size, 2 * MiB)
        c.close()
        r = self.run_tool('softdev-run', os.path.join(OUT, 'ramdisk.so'),
                          '--unix', self.path + '2', 'size=bogus')
        self.assertEqual(r.returncode, 1)
        self.assertIn('ramdisk.so --unix PATH [size=]SIZE', r.stderr)
        dev.stop()


@unittest.skipUnless(shutil.which('pkg-config') and
                     shutil.which('git'), 'needs pkg-config and git')
class FromCheckoutTest(unittest.TestCase):
    """The guide's C device builds in a fresh checkout (the tracked
    files, nothing built) with the guide's commands, and runs."""

    def test_documented_build(self):
        spec = importlib.util.spec_from_file_location(
            'doc_blocks', os.path.join(SRC, 'tests', 'docs',
                                       'test-doc-blocks.py'))
        docs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(docs)
        doc = os.path.join('docs', 'devel', 'soft-device-processes.rst')
        with open(os.path.join(SRC, doc), encoding='utf-8') as f:
            blocks = docs.parse(doc, f.read())
        source = [b for b in blocks if b.marker == ('file', 'blocker.c')]
        build = [b for b in blocks if b.lang == 'console' and
                 b.text.startswith('$ libsoftdev/build.sh\n')]
        self.assertEqual((len(source), len(build)), (1, 1))
        cmds = []
        for c in docs.commands(build[0]):
            cmds.append(c.text)
            if c.text.startswith('cc '):
                break
        self.assertEqual(len(cmds), 3, cmds)
        with tempfile.TemporaryDirectory() as tmp:
            co = os.path.join(tmp, 'checkout')
            files = subprocess.run(['git', 'ls-files', '-z'], cwd=SRC,
                                   check=True, capture_output=True,
                                   text=True).stdout.split('\0')
            for f in filter(None, files):
                if os.path.exists(os.path.join(SRC, f)):
                    os.makedirs(os.path.dirname(os.path.join(co, f)),
                                exist_ok=True)
                    shutil.copy2(os.path.join(SRC, f), os.path.join(co, f))
            with open(os.path.join(co, 'blocker.c'), 'w') as f:
                f.write(source[0].text)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith('PKG_CONFIG')}
            env['SANITIZE'] = '0'
            r = subprocess.run(['bash', '-ec', '\n'.join(cmds)], cwd=co,
                               env=env, capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            sock = os.path.join(tmp, 'b.sock')
            proc = subprocess.Popen([os.path.join(co, 'blocker'), '--unix',
                                     sock, 'limit=1048576'],
                                    stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while not os.path.exists(sock):
                    self.assertIsNone(proc.poll())
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.01)
                lower = bytearray(2 * MiB)
                c = TestClient.connect_unix(sock, lower=lower, shm=True)
                c.handshake()
                self.assertEqual(c.write(0, b'x' * 512),
                                 (-errno.EPERM, b''))
                self.assertEqual(c.write_zeroes(4096, 4096),
                                 (-errno.EPERM, b''))
                self.assertEqual(c.write(MiB, b'y' * 512), (0, b''))
                self.assertEqual(bytes(lower[MiB:MiB + 512]), b'y' * 512)
                c.close()
            finally:
                proc.terminate()
                proc.wait(10)
                proc.stderr.close()


@unittest.skipUnless(shutil.which('pkg-config'), 'needs pkg-config')
class InstallTest(unittest.TestCase):
    """install.sh into a DESTDIR, then build devices against it with
    pkg-config, as a user of the installed library would."""

    def test_install_and_pkg_config(self):
        with tempfile.TemporaryDirectory() as tmp:
            dest = os.path.join(tmp, 'dest')
            prefix = '/opt/softdev-test'
            env = dict(os.environ, SANITIZE='0',
                       BUILD=os.path.join(tmp, 'build'))
            subprocess.run(['sh', os.path.join(SRC, 'libsoftdev',
                                               'install.sh'), prefix, dest],
                           check=True, env=env, capture_output=True)
            root = dest + prefix
            for f in ('lib/libsoftdev.a', 'lib/libsoftdev.so.1',
                      'lib/libsoftdev.so', 'lib/pkgconfig/softdev.pc',
                      'include/softdev.h', 'include/softdev/tap-protocol.h',
                      'bin/softdev-run'):
                self.assertTrue(os.path.exists(os.path.join(root, f)), f)
            self.assertEqual(os.readlink(os.path.join(root, 'lib',
                                                      'libsoftdev.so')),
                             'libsoftdev.so.1')
            pc_env = dict(os.environ,
                          PKG_CONFIG_PATH=os.path.join(root, 'lib',
                                                       'pkgconfig'),
                          PKG_CONFIG_SYSROOT_DIR=dest)
            flags = subprocess.run(['pkg-config', '--cflags', '--libs',
                                    'softdev'], env=pc_env, check=True,
                                   capture_output=True,
                                   text=True).stdout.split()
            self.assertIn(f'-I{root}/include', flags)
            self.assertIn(f'-L{root}/lib', flags)
            cflags = subprocess.run(['pkg-config', '--cflags', 'softdev'],
                                    env=pc_env, check=True,
                                    capture_output=True,
                                    text=True).stdout.split()
            example = os.path.join(SRC, 'libsoftdev', 'examples',
                                   'ramdisk.c')
            prog = os.path.join(tmp, 'ramdisk')
            plugin = os.path.join(tmp, 'ramdisk.so')
            cc = os.environ.get('CC', 'gcc')
            subprocess.run([cc, '-Wall', '-Werror', example, *flags,
                            '-o', prog], check=True)
            subprocess.run([cc, '-Wall', '-Werror', '-shared', '-fPIC',
                            *cflags, example, '-o', plugin], check=True)
            # the program uses the shared library, by its soname
            dyn = subprocess.run(['readelf', '-d', prog], check=True,
                                 capture_output=True, text=True).stdout
            self.assertIn('[libsoftdev.so.1]', dyn)
            run_env = dict(os.environ,
                           LD_LIBRARY_PATH=os.path.join(root, 'lib'))
            for argv in ([prog], [os.path.join(root, 'bin', 'softdev-run'),
                                  plugin]):
                with self.subTest(argv=argv[0]):
                    path = os.path.join(tmp, 'dev.sock')
                    proc = subprocess.Popen(
                        [*argv, '--unix', path, 'size=1M'], env=run_env,
                        stderr=subprocess.PIPE)
                    try:
                        deadline = time.monotonic() + 10
                        while not os.path.exists(path):
                            self.assertIsNone(proc.poll())
                            self.assertLess(time.monotonic(), deadline)
                            time.sleep(0.01)
                        c = TestClient.connect_unix(path, shm=True)
                        c.handshake()
                        self.assertTrue(c.shm_active)
                        check_io(c, rounds=1, count=8)
                        c.close()
                    finally:
                        proc.terminate()
                        proc.wait(10)
                        proc.stderr.close()


if __name__ == '__main__':
    unittest.main()
