"""
TestClient plays QEMU's part of the tap protocol against a soft device,
for tests: it handshakes, sends REQUESTs, applies FORWARDs and serves
LOWER_REQUESTs from an in-memory `lower` bytearray, and checks everything
the device sends with the strict decoder (ProtocolError if it breaks a rule).

SPDX-License-Identifier: GPL-2.0-or-later
"""

from __future__ import annotations

import errno
import itertools
import socket

from . import protocol as p


class TestClient:
    """A client on a connected socket.  lower is the node below (None: no
    node below).  lower_errors maps an op to an errno the node below fails
    it with; lower_ops lists (op, offset, length, flags) of every request
    the node below ran; received lists every message the device sent."""

    __test__ = False            # not a unittest/pytest test case

    def __init__(self, sock: socket.socket, lower: bytearray | None = None,
                 timeout: float = 5.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.lower = lower
        self.lower_errors: dict[int, int] = {}
        self.lower_ops: list[tuple[int, int, int, int]] = []
        self.received: list[p.Message] = []
        self.flushes = 0
        self.decoder = p.Decoder(p.CLIENT)
        self.hello_reply: p.HelloReply | None = None
        self.features = self.size = self.max_data = 0
        self._pending: dict[int, p.Request] = {}
        self._done: dict[int, tuple[int, bytes]] = {}
        self._handles = itertools.count(1)

    @classmethod
    def connect_unix(cls, path: str, **kwargs) -> TestClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(kwargs.get('timeout', 5.0))
        sock.connect(path)
        return cls(sock, **kwargs)

    def close(self):
        self.sock.close()

    def handshake(self, features: int | None = None,
                  lower_size: int | None = None,
                  max_data: int = p.MIN_MAX_DATA) -> p.HelloReply:
        """Send HELLO (by default offering every feature, LOWER only with
        a node below) and wait for HELLO_REPLY."""
        if lower_size is None:
            lower_size = len(self.lower) if self.lower is not None else 0
        if features is None:
            features = p.F_ALL if lower_size else p.F_ALL & ~p.F_LOWER
        self._send(p.Hello(features, lower_size, max_data))
        while self.hello_reply is None:
            self._pump()
        self.features = self.hello_reply.features
        self.max_data = self.hello_reply.max_data
        self.size = self.decoder.size
        return self.hello_reply

    # -- requests ---------------------------------------------------------

    def submit(self, op: int, offset: int = 0, length: int = 0,
               data: bytes | None = None, flags: int = 0,
               handle: int | None = None) -> int:
        """Start a request and return its handle.  Like QEMU, ops whose
        feature was not negotiated go to the node below directly, and FUA
        is dropped without SOFTDEV_TAP_F_FUA."""
        if handle is None:
            handle = next(h for h in self._handles
                          if h not in self._pending and h not in self._done)
        data = bytes(data or b'')
        if op == p.OP_WRITE and not length:
            length = len(data)
        if not self.features & p.F_FUA:
            flags &= ~p.REQ_FUA
        gate = p.OP_FEATURE.get(op, 0)
        if gate and not self.features & gate:
            if self.lower is None:
                result = 0 if op == p.OP_FLUSH else -errno.ENOTSUP
                self._done[handle] = (result, b'')
            else:
                self._done[handle] = self._run_lower(op, offset, length,
                                                     data, flags)
            return handle
        req = p.Request(handle, op, offset, length, flags, data)
        self._send(req)
        self._pending[handle] = req
        return handle

    def collect(self, handle: int) -> tuple[int, bytes]:
        """Wait for a request to finish: (result, data read)."""
        while handle not in self._done:
            self._pump()
        return self._done.pop(handle)

    def request(self, op, offset=0, length=0, data=None, flags=0,
                handle=None) -> tuple[int, bytes]:
        return self.collect(self.submit(op, offset, length, data, flags,
                                        handle))

    def read(self, offset, length):
        return self.request(p.OP_READ, offset, length)

    def write(self, offset, data, fua=False):
        return self.request(p.OP_WRITE, offset, len(data), data,
                            p.REQ_FUA if fua else 0)

    def flush(self):
        return self.request(p.OP_FLUSH)

    def discard(self, offset, length):
        return self.request(p.OP_DISCARD, offset, length)

    def write_zeroes(self, offset, length, may_unmap=False, fua=False):
        flags = (p.REQ_MAY_UNMAP if may_unmap else 0) | \
            (p.REQ_FUA if fua else 0)
        return self.request(p.OP_WRITE_ZEROES, offset, length, flags=flags)

    # -- raw access, for tests of broken input ------------------------------

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def expect_eof(self) -> bool:
        """True if the device closes the connection (within the timeout);
        anything it sends first is discarded."""
        try:
            while self.sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            return False
        return True

    # -- internals --------------------------------------------------------

    def _send(self, msg):
        self.sock.sendall(self.decoder.sending(msg))

    def _pump(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError('the device closed the connection')
        for msg in self.decoder.feed(chunk):
            self.received.append(msg)
            if isinstance(msg, p.HelloReply):
                self.hello_reply = msg
            elif isinstance(msg, p.LowerRequest):
                result, data = self._run_lower(msg.op, msg.offset,
                                               msg.length, msg.data,
                                               msg.flags)
                self._send(p.LowerReply(msg.handle, result, data))
            else:
                req = self._pending.pop(msg.handle)
                if msg.action == p.ACTION_COMPLETE:
                    self._done[msg.handle] = (msg.result, msg.data)
                else:
                    self._done[msg.handle] = self._run_lower(
                        req.op, msg.offset, req.length,
                        msg.data or req.data, req.flags)

    def _run_lower(self, op, offset, length, data, flags):
        """Run one request on the node below: (result, data read)."""
        self.lower_ops.append((op, offset, length, flags))
        err = self.lower_errors.get(op)
        if err:
            return -err, b''
        end = offset + length
        if op == p.OP_READ:
            return 0, bytes(self.lower[offset:end])
        if op == p.OP_WRITE:
            self.lower[offset:end] = data
        elif op in (p.OP_WRITE_ZEROES, p.OP_DISCARD):
            self.lower[offset:end] = bytes(length)
        else:
            self.flushes += 1
        return 0, b''
