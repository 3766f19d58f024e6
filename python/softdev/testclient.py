"""
TestClient plays QEMU's part of the tap protocol against a soft device,
for tests: it handshakes (with or without shared memory), sends REQUESTs
(one at a time, or many in one write), applies FORWARDs and serves
LOWER_REQUESTs from an in-memory `lower` bytearray, and checks everything
the device sends with the strict decoder (ProtocolError if it breaks a
rule).  It works against Python and C devices alike:

    c = TestClient.connect_unix(path, lower=bytearray(1 << 20), shm=True)
    c.handshake()                       # offers SOFTDEV_TAP_F_SHM
    assert c.shm_active                 # the device accepted it
    with c.batch():                     # one write for all of them
        handles = [c.submit(OP_READ, i * 4096, 4096) for i in range(16)]
    results = c.collect_all(handles)
    c.verify_io(span=1 << 20)           # random writes read back

SPDX-License-Identifier: GPL-2.0-or-later
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import random
import socket
import struct
import time

from . import protocol as p

OP_FEATURES = p.F_FLUSH | p.F_DISCARD | p.F_ZEROES | p.F_FUA


class TestClient:
    """A client on a connected socket.  lower is the node below (None: no
    node below).  shm: offer SOFTDEV_TAP_F_SHM in handshake() (the default
    for its shm argument); ring: with it, offer SOFTDEV_TAP_F_RING too, so
    that REQUESTs and REPLYs travel through the rings (the client KICKs
    after every REQUEST, and looks at the reply ring at least every 10 ms
    whether or not a KICK came).  lower_errors maps an op to an errno the node
    below fails it with; lower_ops lists (op, offset, length, flags) of
    every request the node below ran; received lists every message the
    device sent.

    Like QEMU, the client keeps at most the negotiated max_inflight
    requests outstanding: submit() waits for a reply when it would
    exceed it.  With shared memory, each request takes a free slot."""

    __test__ = False            # not a unittest/pytest test case

    def __init__(self, sock: socket.socket, lower: bytearray | None = None,
                 timeout: float = 5.0, shm: bool = False,
                 ring: bool = False):
        self.sock = sock
        self.timeout = timeout
        self.ring_wanted = ring
        self.ring: memoryview | None = None     # control block
        self.ring_entries = 0
        self.kicks = 0                  # KICKs the device sent
        self._req_prod = self._rep_cons = 0
        self.sock.settimeout(timeout)
        self.lower = lower
        self.shm_wanted = shm
        self.lower_errors: dict[int, int] = {}
        self.lower_ops: list[tuple[int, int, int, int]] = []
        self.received: list[p.Message] = []
        self.flushes = 0
        self.writes = 0                 # socket writes (sendall/sendmsg)
        self.decoder = p.Decoder(p.CLIENT, map_shm=self._map_shm)
        self.hello_reply: p.HelloReply | None = None
        self.features = self.size = self.max_data = self.max_inflight = 0
        self.shm: mmap.mmap | None = None
        self._shm_fd: int | None = None
        self._free_slots: list[int] = []
        self._pending: dict[int, p.Request] = {}
        self._done: dict[int, tuple[int, bytes]] = {}
        self._handles = itertools.count(1)
        self._corked = 0
        self._out: list[bytes] = []

    @classmethod
    def connect_unix(cls, path: str, **kwargs) -> TestClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(kwargs.get('timeout', 5.0))
        sock.connect(path)
        return cls(sock, **kwargs)

    def close(self):
        self.sock.close()
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None
        if self.ring is not None:
            self.ring.release()
            self.ring = None
        if self.shm is not None:
            self.shm.close()
            self.shm = None

    @property
    def ring_active(self) -> bool:
        """Requests and replies travel through the rings."""
        return self.ring is not None

    @property
    def shm_active(self) -> bool:
        """The shared-memory data path is in use on this connection."""
        return self.decoder.shm_setup is not None

    def handshake(self, features: int | None = None,
                  lower_size: int | None = None,
                  max_data: int = p.MIN_MAX_DATA,
                  max_inflight: int = p.DEFAULT_MAX_INFLIGHT,
                  shm: bool | None = None,
                  shm_setup: bool = True) -> p.HelloReply:
        """Send HELLO and wait for HELLO_REPLY; if the device accepted
        SOFTDEV_TAP_F_SHM, send SHM_SETUP with a new memfd (unless
        shm_setup is False: tests of broken SHM_SETUPs send their own with
        send_raw).  By default every op feature is offered, LOWER if there
        is a node below, and SHM if shm (default: the constructor's); an
        explicit `features` gets SHM set or cleared by shm the same way."""
        shm = self.shm_wanted if shm is None else shm
        has_lower = self.lower is not None or bool(lower_size)
        if lower_size is None:
            lower_size = len(self.lower) if self.lower is not None else 0
        if features is None:
            features = OP_FEATURES | (p.F_LOWER if has_lower else 0)
        features = features & ~p.F_SHM | (p.F_SHM if shm else 0)
        if shm and self.ring_wanted:
            features |= p.F_RING
        self._send(p.Hello(features, lower_size, max_data, max_inflight))
        while self.hello_reply is None:
            self._pump()
        self.features = self.hello_reply.features
        self.max_data = self.decoder.max_data
        self.max_inflight = self.decoder.max_inflight
        self.size = self.decoder.size
        if self.features & p.F_SHM and shm_setup:
            entries = 0
            if self.features & p.F_RING:
                entries = 1
                while entries < self.max_inflight:
                    entries *= 2
            wire = self.decoder.sending(p.ShmSetup(self.max_inflight,
                                                   self.max_data,
                                                   ring_entries=entries))
            self._flush()
            socket.send_fds(self.sock, [wire], [self._shm_fd])
            self.writes += 1
            os.close(self._shm_fd)
            self._shm_fd = None
            self._free_slots = list(range(self.max_inflight))
        return self.hello_reply

    # -- requests ---------------------------------------------------------

    def submit(self, op: int, offset: int = 0, length: int = 0,
               data: bytes | None = None, flags: int = 0,
               handle: int | None = None, replay: bool = False) -> int:
        """Start a request and return its handle.  Like QEMU, ops whose
        feature was not negotiated never change data unseen (FLUSH goes to
        the node below, DISCARD completes without effect, WRITE_ZEROES is
        sent as WRITEs of zeroes), and FUA is dropped without
        SOFTDEV_TAP_F_FUA.  replay: set the header flag
        REPLAY (a request sent again after a reconnection)."""
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
            if op == p.OP_WRITE_ZEROES:
                return self._zeroes_as_writes(handle, offset, length, flags)
            if op == p.OP_FLUSH and self.lower is not None:
                self._done[handle] = self._run_lower(op, offset, length,
                                                     data, flags)
            else:
                self._done[handle] = (0, b'')
            return handle
        if op == p.OP_READ and self.features & p.F_READ_BELOW and \
                self.shm_active and self.lower is not None:
            # As QEMU does: read below first, and send the data with it
            result, data = self._run_lower(op, offset, length, b'', 0)
            if result < 0:
                self._done[handle] = (result, b'')
                return handle
            flags |= p.REQ_BELOW
        while self.max_inflight and \
                len(self._pending) >= self.max_inflight:
            self._pump()                # wait for room, as QEMU does
        slot = self._free_slots.pop(0) if self.shm_active else 0
        req = p.Request(handle, op, offset, length, flags, data, slot,
                        replay)
        try:
            self._send(req)
        except p.ProtocolError:
            if self.shm_active:
                self._free_slots.insert(0, slot)
            raise
        self._pending[handle] = req
        return handle

    def _zeroes_as_writes(self, handle, offset, length, flags):
        """A WRITE_ZEROES the device did not accept, done as QEMU's block
        layer does it: WRITEs of zeroed buffers (at most max_data each),
        one after the other; the result is recorded under handle."""
        self._done[handle] = (0, b'')       # reserved meanwhile
        result, pos = 0, 0
        while pos < length and result == 0:
            n = min(length - pos, self.max_data)
            result, _ = self.request(p.OP_WRITE, offset + pos, n, bytes(n),
                                     flags & p.REQ_FUA)
            pos += n
        self._done[handle] = (result, b'')
        return handle

    def collect(self, handle: int) -> tuple[int, bytes]:
        """Wait for a request to finish: (result, data read)."""
        while handle not in self._done:
            self._pump()
        return self._done.pop(handle)

    def collect_all(self, handles) -> list[tuple[int, bytes]]:
        return [self.collect(h) for h in handles]

    @contextlib.contextmanager
    def batch(self):
        """Inside, messages are queued and written together at the end
        (or earlier, when the client must wait for a reply)."""
        self._corked += 1
        try:
            yield self
        finally:
            self._corked -= 1
            if not self._corked:
                self._flush()

    def submit_many(self, requests) -> list[int]:
        """submit(*args) for each tuple in requests, in one write."""
        with self.batch():
            return [self.submit(*args) for args in requests]

    def outstanding(self) -> list[p.Request]:
        """The requests sent and not yet answered, in the order sent."""
        return list(self._pending.values())

    def replay(self, requests) -> list[int]:
        """Send requests again (e.g. another client's outstanding() after
        a reconnection), as QEMU does: same handles, in order, with the
        REPLAY flag, in one write.  Returns their handles."""
        with self.batch():
            return [self.submit(r.op, r.offset, r.length, r.data, r.flags,
                                r.handle, replay=True) for r in requests]

    def request(self, op, offset=0, length=0, data=None, flags=0,
                handle=None, replay=False) -> tuple[int, bytes]:
        return self.collect(self.submit(op, offset, length, data, flags,
                                        handle, replay))

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

    def verify_io(self, span: int | None = None, rounds: int = 4,
                  count: int = 16, max_length: int | None = None,
                  seed: int = 0):
        """Exercise a device whose data reads back as written (ramdisk,
        passthrough, xor, ...): each round submits up to `count` random
        WRITEs to ranges that do not overlap (the device may run them in
        any order) in one write, then READs of the same ranges in one
        write, and compares them with a model (seeded from reading the
        range first).  span: bytes from offset 0 to use (default: the
        device size).  Raises AssertionError on a mismatch or an error
        result."""
        rng = random.Random(seed)
        span = min(span or self.size, self.size)
        max_length = min(max_length or self.max_data, self.max_data, span)
        model = bytearray()
        for off in range(0, span, self.max_data):
            result, data = self.read(off, min(self.max_data, span - off))
            if result:
                raise AssertionError(f'READ at {off}: result {result}')
            model += data
        for _ in range(rounds):
            ranges = []
            for _ in range(count):
                n = rng.randrange(1, max_length + 1)
                off = rng.randrange(span - n + 1)
                if any(off < o + m and o < off + n for o, m, _ in ranges):
                    continue
                data = rng.randbytes(n)
                model[off:off + n] = data
                ranges.append((off, n, data))
            handles = self.submit_many((p.OP_WRITE, off, n, data)
                                       for off, n, data in ranges)
            for h, result in zip(handles, self.collect_all(handles)):
                if result != (0, b''):
                    raise AssertionError(f'WRITE handle {h}: {result}')
            handles = self.submit_many((p.OP_READ, off, n)
                                       for off, n, _ in ranges)
            for (off, n, _), (result, data) in zip(
                    ranges, self.collect_all(handles)):
                if result or data != model[off:off + n]:
                    raise AssertionError(f'READ {off}+{n}: result '
                                         f'{result}, data differs from '
                                         f'what was written')

    # -- raw access, for tests of broken input ------------------------------

    def send_raw(self, data: bytes, fds=()):
        """Write bytes (and pass fds with SCM_RIGHTS) as they are."""
        self._flush()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)
        self.writes += 1

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

    def _map_shm(self, setup: p.ShmSetup) -> mmap.mmap:
        """The decoder's map_shm: a new memfd for the SHM_SETUP we send."""
        size = setup.region_size
        fd = os.memfd_create('softdev-tap-test', os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self.shm = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            raise
        self._shm_fd = fd
        if setup.ring_entries:
            start = setup.slots * setup.slot_size
            self.ring = memoryview(self.shm)[start:]
            self.ring_entries = setup.ring_entries
            self._put_word(p.RING_CLI_IDLE, 1)
        return self.shm

    # -- rings ------------------------------------------------------------

    def _word(self, off: int) -> int:
        return struct.unpack_from('<I', self.ring, off)[0]

    def _put_word(self, off: int, value: int):
        struct.pack_into('<I', self.ring, off, value & 0xffffffff)

    def _entry(self, ring: int, index: int) -> int:
        """Offset in the control block's view of entry index of ring 0
        (requests) or 1 (replies)."""
        return p.RING_CTL_SIZE + \
            (ring * self.ring_entries + index % self.ring_entries) * \
            p.RING_ENTRY

    def ring_post(self, wire: bytes, kick: bool = True):
        """Put a message (or any bytes, for tests of broken entries) in
        the next request-ring entry, publish it and KICK the device."""
        off = self._entry(0, self._req_prod)
        self.ring[off:off + p.RING_ENTRY] = bytes(p.RING_ENTRY)
        self.ring[off:off + len(wire)] = wire
        self._req_prod = (self._req_prod + 1) & 0xffffffff
        self._put_word(p.RING_REQ_PROD, self._req_prod)
        if kick:
            self._out.append(self.decoder.sending(p.Kick()))

    def ring_set_prod(self, value: int):
        """Write the request ring's producer index as it is (tests)."""
        self._put_word(p.RING_REQ_PROD, value)
        self._out.append(self.decoder.sending(p.Kick()))
        self._flush()

    def _reap(self) -> bool:
        """Take the replies in the reply ring; True if there were any."""
        n = (self._word(p.RING_REP_PROD) - self._rep_cons) & 0xffffffff
        if n > self.ring_entries:
            raise p.ProtocolError(f'reply ring producer index is {n} '
                                  f'entries ahead')
        for _ in range(n):
            off = self._entry(1, self._rep_cons)
            entry = bytes(self.ring[off:off + p.RING_MSG_SIZE])
            self._rep_cons = (self._rep_cons + 1) & 0xffffffff
            msgs = self.decoder.feed(entry, ring=True)
            if len(msgs) != 1 or self.decoder.pending:
                raise p.ProtocolError('ring entry is not one message '
                                      'without data')
            self._got(msgs[0])
        return n > 0

    def _send(self, msg):
        if self.ring_active and msg.TYPE == p.TYPE_REQUEST:
            self.ring_post(self.decoder.sending(msg))
        else:
            self._out.append(self.decoder.sending(msg))
        if not self._corked:
            self._flush()

    def _flush(self):
        if self._out:
            data = b''.join(self._out)
            self._out.clear()
            self.sock.sendall(data)
            self.writes += 1

    def _pump(self):
        self._flush()                   # what the device waits for
        if not self.ring_active:
            self._read_socket()
            return
        deadline = time.monotonic() + self.timeout
        while True:
            # The device clears it when it KICKs: ask again each time.
            self._put_word(p.RING_CLI_IDLE, 1)
            if self._reap():
                return
            if time.monotonic() > deadline:
                raise socket.timeout('no reply in the ring')
            self.sock.settimeout(0.01)
            try:
                self._read_socket()
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(self.timeout)
            self._flush()               # LOWER_REPLYs

    def _read_socket(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError('the device closed the connection')
        for msg in self.decoder.feed(chunk):
            self._got(msg)

    def _got(self, msg):
        """Act on one message of the device."""
        self.received.append(msg)
        if isinstance(msg, p.Kick):
            self.kicks += 1
        elif isinstance(msg, p.HelloReply):
            self.hello_reply = msg
        elif isinstance(msg, p.LowerRequest):
            result, data = self._run_lower(msg.op, msg.offset,
                                           msg.length, msg.data,
                                           msg.flags)
            self._send(p.LowerReply(msg.handle, result, data))
        else:
            req = self._pending.pop(msg.handle)
            if self.shm_active:
                self._free_slots.append(req.slot)
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
