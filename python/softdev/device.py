"""
BlockDevice, the base class of a soft block device served over the tap
protocol.  Subclass it and override read, write, flush, discard and
write_zeroes; the defaults forward each request unchanged to the node
below, so an empty subclass is a passthrough.

SPDX-License-Identifier: GPL-2.0-or-later

What a handler returns:

* read() returns the bytes read (exactly `length` of them); the others
  return None when done.
* Any handler may return Forward() instead: the client then sends the
  request to the node below itself.  Forward(offset=...) moves it, and a
  write may pass Forward(data=...) (same length) to replace the guest's
  data.
* Raising DeviceError(errno.ENOSPC), or any OSError, completes the request
  with -errno; any other exception is logged and gives -EIO.
* Inside a handler, lower_read(), lower_write(), lower_flush(),
  lower_discard() and lower_write_zeroes() do I/O on the node below and
  block until it is done; they raise DeviceError when it fails.
* Inside a handler, self.request is the REQUEST being handled (a
  protocol.Request: handle, op, offset, length, flags, ...), and
  self.request.replay is True if the client sent it again after a
  reconnection (it may or may not have taken effect before).

Settings are class attributes, or keyword arguments (strings from
'--arg KEY=VALUE'): size (None: the size of the node below), features,
max_data, max_inflight (None: the client's; else at most this many
requests outstanding at once), shm (use the shared-memory data path when
the client offers it, default on) and workers.  After each handshake,
self.size, self.features, self.max_data, self.max_inflight,
self.has_lower and self.lower_size (0 without a node below) hold the
values in effect.

What changes data cannot bypass an overridden write(): if you override
write() but not write_zeroes(), write-zeroes reach write() as data of
zeroes (QEMU writes zeroed buffers instead), and if you do not override
discard(), discards complete without effect (they are advisory) unless
the class sets discard_passes = True, which forwards them unchanged.
Without write(), write_zeroes() and discard() forward by default.

Feature bits follow from that (flush -> FLUSH requests, DISCARD and
WRITE_ZEROES as above, write or write_zeroes -> FUA, and LOWER whenever
there is a node below); set `features` to choose them yourself.
Requests whose bit is not negotiated never reach you.
SOFTDEV_TAP_F_SHM follows the `shm` setting instead (the server accepts it
only on a unix socket); it changes nothing for handlers, which get and
return bytes either way.

Thread model (one connection at a time):

* The server's main thread accepts a connection, does the handshake and
  then runs your handlers one at a time, in the order the requests
  arrived.  Your code needs no locks, and pdb breakpoints in it work:
  python3 -m pdb -m softdev run MODULE:CLASS ...  ('run --pdb' instead
  enters the debugger post-mortem when a handler raises.)
* A reader thread per connection decodes the socket.  It queues REQUESTs
  for the main thread and hands each LOWER_REPLY to the handler waiting
  in lower_*(); that is why a handler may block on the node below.
  Requests often arrive many per read; with one handler thread, the
  replies to such a batch go out together when the last is ready.
* With workers = N > 1, handlers run in a pool of N threads instead, so
  requests overlap and complete in any order; protect your own state with
  a lock then (and use breakpoint() rather than pdb's break command).
* When the client disconnects, waiting lower_*() calls raise
  ConnectionLost, requests not yet started are dropped (the client may
  send them again after reconnecting, with the same handles and
  self.request.replay set, so every handler must be idempotent), and the
  server waits for running handlers to end before it accepts the next
  connection.
"""

from __future__ import annotations

import errno
import logging
import os
import pdb
import re
import sys
import threading
from dataclasses import dataclass

from . import protocol as p

log = logging.getLogger('softdev')


class DeviceError(OSError):
    """Raise DeviceError(errno.EIO) to complete a request with -EIO."""

    def __init__(self, err: int, message: str | None = None):
        super().__init__(err, message or os.strerror(err))


class ConnectionLost(DeviceError):
    """The client went away while a handler waited for the node below."""

    def __init__(self):
        super().__init__(errno.EIO, 'connection to the client lost')


@dataclass(frozen=True)
class Forward:
    """Handler result: let the client send the request to the node below."""
    offset: int | None = None       # where it goes below; None: unchanged
    data: bytes | None = None       # WRITE only: replaces the guest's data


def parse_size(value) -> int:
    """An int, or a string like '4096', '0x1000', '64K', '1M', '2GiB'."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.lower().startswith('0x'):
        return int(text, 16)
    m = re.fullmatch(r'(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?', text, re.I)
    if not m:
        raise ValueError(f'not a size: {value!r}')
    number = float(m[1]) if '.' in m[1] else int(m[1])
    shift = 10 * ' kmgt'.index(m[2].lower() or ' ')
    return int(number * (1 << shift))


def parse_bool(value) -> bool:
    """A bool, or a string like 'on', 'off', 'yes', 'no', '1', '0'."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'on', 'yes', 'true'):
        return True
    if text in ('0', 'off', 'no', 'false'):
        return False
    raise ValueError(f'not a boolean: {value!r}')


class BlockDevice:
    """A soft block device; see the module docstring."""

    size: int | None = None     # bytes; None: the size of the node below
    features: int | None = None  # None: from the methods you override
    max_data: int = 1 << 20     # largest data part we accept (>= 64K)
    max_inflight: int | None = None  # None: the client's; else a limit
    shm: bool = True            # accept SOFTDEV_TAP_F_SHM when offered
    workers: int = 1            # >1: handlers run in a thread pool
    has_lower = False           # set at the handshake: a node below?
    lower_size = 0              # set at the handshake; 0: no node below
    connection = None           # the server.Connection being served
    post_mortem = False         # pdb.post_mortem() when a handler fails
    discard_passes = False      # write() but no discard(): forward them

    def __init__(self, size=None, features=None, max_data=None,
                 workers=None, max_inflight=None, shm=None):
        # Arguments come as strings from 'python3 -m softdev run --arg'.
        if size is not None:
            self.size = parse_size(size)
        if features is not None:
            self.features = parse_size(features)
        if max_data is not None:
            self.max_data = parse_size(max_data)
        if workers is not None:
            self.workers = int(workers)
        if max_inflight is not None:
            self.max_inflight = int(max_inflight)
        if shm is not None:
            self.shm = parse_bool(shm)

    def _remember_settings(self):
        # Each handshake overwrites size, features, max_data and
        # max_inflight with the negotiated values; keep what was asked for
        # (at the first one).
        if '_want' not in self.__dict__:
            self._want = (self.size, self.features, self.max_data,
                          self.max_inflight)

    @property
    def request(self) -> p.Request | None:
        """The REQUEST whose handler runs in this thread, else None."""
        return getattr(self._thread_state(), 'request', None)

    def _thread_state(self) -> threading.local:
        # created lazily: subclasses need not call __init__
        return self.__dict__.setdefault('_tls', threading.local())

    # -- override these ---------------------------------------------------

    def read(self, offset: int, length: int):
        return Forward()

    def write(self, offset: int, data: bytes, fua: bool):
        return Forward()

    def flush(self):
        return Forward()

    def discard(self, offset: int, length: int):
        return Forward()

    def write_zeroes(self, offset: int, length: int, may_unmap: bool):
        return Forward()

    # -- helpers for handlers: I/O on the node below ----------------------

    def lower_read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        for off, n in _chunks(offset, length, self.max_data):
            out += self._lower(p.OP_READ, off, n)
        return bytes(out)

    def lower_write(self, offset: int, data: bytes, fua: bool = False):
        data = memoryview(data)
        for off, n in _chunks(offset, len(data), self.max_data):
            pos = off - offset
            self._lower(p.OP_WRITE, off, n, bytes(data[pos:pos + n]),
                        p.REQ_FUA if fua else 0)

    def lower_flush(self):
        self._lower(p.OP_FLUSH, 0, 0)

    def lower_discard(self, offset: int, length: int):
        for off, n in _chunks(offset, length, p.MAX_RANGE):
            self._lower(p.OP_DISCARD, off, n)

    def lower_write_zeroes(self, offset: int, length: int,
                           may_unmap: bool = False):
        for off, n in _chunks(offset, length, p.MAX_RANGE):
            self._lower(p.OP_WRITE_ZEROES, off, n, b'',
                        p.REQ_MAY_UNMAP if may_unmap else 0)

    def _lower(self, op, offset, length, data=b'', flags=0) -> bytes:
        conn = self.connection
        if conn is None:
            raise DeviceError(errno.ENOTCONN, 'no client connected')
        result, data = conn.lower(op, offset, length, data, flags)
        if result < 0:
            raise DeviceError(-result)
        return data

    # -- called by the server ---------------------------------------------

    def wanted_features(self, hello: p.Hello) -> int:
        """Feature bits to accept (of those offered) for this client."""
        self._remember_settings()
        want = self._want[1]
        if want is not None:
            return want
        cls = type(self)
        overrides = {name for name in ('write', 'flush', 'discard',
                                       'write_zeroes')
                     if getattr(cls, name) is not getattr(BlockDevice, name)}
        want = p.F_LOWER if hello.features & p.F_LOWER else 0
        want |= p.F_FLUSH if 'flush' in overrides else 0
        # Safe by default: see the module docstring.
        writes = 'write' in overrides
        if 'discard' in overrides or not writes or self.discard_passes:
            want |= p.F_DISCARD
        if 'write_zeroes' in overrides or not writes:
            want |= p.F_ZEROES
        if overrides & {'write', 'write_zeroes'}:
            want |= p.F_FUA
        return want

    def negotiate(self, hello: p.Hello) -> p.HelloReply:
        """Answer a client's HELLO (the server has removed
        SOFTDEV_TAP_F_SHM from it where shared memory cannot work); sets
        size, features, max_data, max_inflight, has_lower and lower_size
        to the values in effect for this connection.  Offered feature bits
        this package does not know are ignored."""
        self._remember_settings()
        size, _, max_data, max_inflight = self._want
        has_lower = bool(hello.features & p.F_LOWER)
        if not size and not has_lower:
            raise DeviceError(errno.EINVAL, 'the device has no size and '
                              'there is no node below to take it from')
        if max_data < p.MIN_MAX_DATA:
            raise DeviceError(errno.EINVAL, f'max_data {max_data} is below '
                              f'{p.MIN_MAX_DATA}')
        if max_inflight is not None and \
                not 1 <= max_inflight <= p.MAX_INFLIGHT:
            raise DeviceError(errno.EINVAL, f'max_inflight {max_inflight} '
                              f'is not 1 to {p.MAX_INFLIGHT}')
        self.has_lower = has_lower
        self.lower_size = hello.lower_size if has_lower else 0
        self.size = size or self.lower_size
        want = self.wanted_features(hello) & ~p.F_SHM
        want |= p.F_SHM if self.shm else 0
        self.features = want & hello.features & p.F_ALL
        self.max_data = min(max_data, hello.max_data)
        limit = max_inflight if max_inflight is not None and \
            max_inflight < hello.max_inflight else 0
        self.max_inflight = limit or hello.max_inflight
        return p.HelloReply(features=self.features, size=size or 0,
                            max_data=self.max_data, max_inflight=limit,
                            device_class=hello.device_class)

    def handle(self, req: p.Request) -> p.Reply:
        """Run the handler for one REQUEST and build its REPLY."""
        state = self._thread_state()
        state.request = req
        try:
            return self._handle(req)
        finally:
            state.request = None

    def _handle(self, req: p.Request) -> p.Reply:
        try:
            outcome = self._call(req)
        except OSError as e:
            err = e.errno if isinstance(e.errno, int) and \
                0 < e.errno <= p.MAX_ERRNO else errno.EIO
            return p.Reply(req.handle, result=-err)
        except Exception:
            log.exception('%s handler failed; completing with -EIO',
                          p.OP_NAMES[req.op])
            if self.post_mortem:
                pdb.post_mortem(sys.exc_info()[2])
            return p.Reply(req.handle, result=-errno.EIO)
        return self._reply(req, outcome)

    def _call(self, req: p.Request):
        if req.op == p.OP_READ:
            return self.read(req.offset, req.length)
        if req.op == p.OP_WRITE:
            return self.write(req.offset, req.data,
                              bool(req.flags & p.REQ_FUA))
        if req.op == p.OP_FLUSH:
            return self.flush()
        if req.op == p.OP_DISCARD:
            return self.discard(req.offset, req.length)
        outcome = self.write_zeroes(req.offset, req.length,
                                    bool(req.flags & p.REQ_MAY_UNMAP))
        if outcome is None and req.flags & p.REQ_FUA:
            # write_zeroes has no fua argument: make it durable by a flush
            if isinstance(self.flush(), Forward) and \
                    self.features & p.F_LOWER:
                self.lower_flush()
        return outcome

    def _reply(self, req: p.Request, outcome) -> p.Reply:
        h, op = req.handle, p.OP_NAMES[req.op]
        if isinstance(outcome, Forward):
            if self.has_lower:
                offset = req.offset if outcome.offset is None \
                    else outcome.offset
                return p.Reply(h, action=p.ACTION_FORWARD, offset=offset,
                               data=bytes(outcome.data or b''))
            # Nothing below: do what the client does for ops we decline.
            if req.op in (p.OP_FLUSH, p.OP_DISCARD):
                return p.Reply(h)
            if req.op == p.OP_WRITE_ZEROES:
                # the client then writes zeroed buffers
                return p.Reply(h, result=-errno.ENOTSUP)
            log.error('cannot forward a %s: there is no node below', op)
            return p.Reply(h, result=-errno.EIO)
        if req.op == p.OP_READ and isinstance(outcome, (bytes, bytearray,
                                                        memoryview)):
            return p.Reply(h, data=bytes(outcome))
        if req.op != p.OP_READ and outcome is None:
            return p.Reply(h)
        log.error('%s handler returned %s; completing with -EIO', op,
                  type(outcome).__name__)
        return p.Reply(h, result=-errno.EIO)


def _chunks(offset: int, length: int, step: int):
    """(offset, length) pieces of at most step bytes covering the range."""
    pos = 0
    while pos < length:
        n = min(step, length - pos)
        yield offset + pos, n
        pos += n
