"""
Tests of libsoftdev, the C library for soft devices: builds it and its
examples with libsoftdev/build.sh into build/unit/libsoftdev, runs each
example on a unix socket and drives it with the Python TestClient, which
checks everything the device sends.  Set SANITIZE=1 for ASan/UBSan.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import errno
import os
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


def build():
    subprocess.run(['sh', os.path.join(SRC, 'libsoftdev', 'build.sh'), SRC,
                    OUT], check=True)


class ExampleTest(unittest.TestCase):
    """Runs one example per test on a socket in a temporary directory."""

    example = None
    args = ()

    @classmethod
    def setUpClass(cls):
        build()

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, 'dev.sock')
        self.proc = subprocess.Popen(
            [os.path.join(OUT, self.example), '--unix', self.path,
             *self.args], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.fail(f'{self.example} did not start: '
                          f'{self.proc.stderr.read().decode()}')
            time.sleep(0.01)
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()
        self.proc.terminate()
        self.proc.wait(5)
        self.stderr = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        for bad in ('AddressSanitizer', 'runtime error:', 'callback returned'):
            self.assertNotIn(bad, self.stderr)
        self.assertFalse(os.path.exists(self.path),
                         'SIGTERM left the socket behind')
        self.tmp.cleanup()

    def connect(self, lower=None, **kwargs):
        client = TestClient.connect_unix(self.path, lower=lower)
        self.clients.append(client)
        client.handshake(**kwargs)
        return client


class RamdiskTest(ExampleTest):
    example = 'ramdisk'
    args = ('size=1M',)

    def test_handshake(self):
        c = self.connect()
        self.assertEqual(c.size, MiB)
        self.assertEqual(c.hello_reply.size, MiB)
        self.assertEqual(c.features, p.F_FLUSH | p.F_DISCARD | p.F_ZEROES |
                         p.F_FUA)
        self.assertEqual(c.max_data, p.MIN_MAX_DATA)

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

    def test_forward_without_lower(self):
        c = self.connect()
        # discard returns SOFTDEV_FORWARD; there is no node below
        self.assertEqual(c.discard(0, 4096), (-errno.ENOTSUP, b''))
        # without F_DISCARD the client itself answers the same
        c.close()
        c = self.connect(features=p.F_ALL & ~p.F_LOWER & ~p.F_DISCARD)
        self.assertEqual(c.features & p.F_DISCARD, 0)
        self.assertEqual(c.discard(0, 4096), (-errno.ENOTSUP, b''))

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

    def test_bad_magic_then_reconnect(self):
        c = self.connect()
        self.assertEqual(c.write(0, b'x' * 512), (0, b''))
        c.send_raw(b'\0' * p.HEADER_SIZE)
        self.assertTrue(c.expect_eof())
        c2 = self.connect()
        self.assertEqual(c2.read(0, 512), (0, b'x' * 512))

    def test_protocol_errors_close(self):
        bad = [
            # request before HELLO
            p.HEADER.pack(p.MAGIC, p.TYPE_REQUEST, 0, 1, 24, 0) +
            p.REQUEST.pack(p.OP_READ, 0, 0, 0, 512),
            # HELLO with a nonzero handle
            p.HEADER.pack(p.MAGIC, p.TYPE_HELLO, 0, 7, 40, 0) +
            p.HELLO.pack(1, 1, 0, 0, 65536, 0, 0),
        ]
        for wire in bad:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            client = TestClient(sock)
            self.clients.append(client)
            client.send_raw(wire)
            self.assertTrue(client.expect_eof())
        c = self.connect()
        # a read beyond the end, and a duplicate outstanding handle
        c.send_raw(p.HEADER.pack(p.MAGIC, p.TYPE_REQUEST, 0, 1, 24, 0) +
                   p.REQUEST.pack(p.OP_READ, 0, 0, MiB, 512))
        self.assertTrue(c.expect_eof())
        # a LOWER_REPLY nobody asked for
        c = self.connect()
        c.send_raw(p.HEADER.pack(p.MAGIC, p.TYPE_LOWER_REPLY, 0, 9, 16,
                                 0) + bytes(16))
        self.assertTrue(c.expect_eof())
        self.assertEqual(self.connect().flush(), (0, b''))

    def test_socket_mode(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)


class XorTest(ExampleTest):
    example = 'xor'
    args = ('key=0x5a',)

    def test_lower_holds_xored_data(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.features, p.F_ZEROES | p.F_FUA | p.F_LOWER)
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
        c = self.connect(bytearray(MiB))
        read = (p.HEADER.pack(p.MAGIC, p.TYPE_REQUEST, 0, 5, 24, 0) +
                p.REQUEST.pack(p.OP_READ, 0, 0, 0, 512))
        # the first READ waits for a LOWER_REPLY that is never sent
        c.send_raw(read)
        c.send_raw(read)
        self.assertTrue(c.expect_eof())
        self.assertEqual(self.connect(bytearray(MiB)).read(0, 512),
                         (0, bytes([0x5a]) * 512))

    def test_no_lower_node(self):
        # size comes from the node below: without one, no handshake
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        client = TestClient(sock)
        self.clients.append(client)
        client.send_raw(p.HEADER.pack(p.MAGIC, p.TYPE_HELLO, 0, 0, 40, 0) +
                        p.HELLO.pack(1, 1, 0, 0, 65536, 0, 0))
        self.assertTrue(client.expect_eof())
        self.connect(bytearray(MiB))


class PassthroughTest(ExampleTest):
    example = 'passthrough'

    def test_passthrough(self):
        lower = bytearray(MiB)
        c = self.connect(lower)
        self.assertEqual(c.features, p.F_LOWER)
        data = os.urandom(65536)
        self.assertEqual(c.write(12345, data), (0, b''))
        self.assertEqual(bytes(lower[12345:12345 + 65536]), data)
        self.assertEqual(c.read(12345, 65536), (0, data))
        self.assertEqual(c.flush(), (0, b''))
        self.assertEqual(c.flushes, 1)
        replies = [m for m in c.received if isinstance(m, p.Reply)]
        self.assertEqual(len(replies), 2)
        self.assertTrue(all(m.action == p.ACTION_FORWARD for m in replies))

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


if __name__ == '__main__':
    unittest.main()
