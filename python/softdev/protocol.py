"""
Wire format of the softdev tap protocol (docs/specs/softdev-tap.rst):
constants, one dataclass per message, encoders, and a strict incremental
Decoder that checks every rule of the spec and raises ProtocolError.
There are no sockets here, so a fuzzer can drive Decoder.feed() directly.

SPDX-License-Identifier: GPL-2.0-or-later

A Decoder belongs to one side (DEVICE or CLIENT) and decodes what the
other side sends.  The rules depend on the connection's state (handshake,
negotiated values, outstanding handles and slots), so every message the
owner sends goes through Decoder.sending(msg), which checks it by the same
rules, records it and returns its wire bytes.  For example, to fuzz a
device:

    dec = Decoder(DEVICE)
    dec.feed(encode(Hello(features=F_ALL, lower_size=1 << 20)))
    dec.sending(HelloReply(features=F_ALL & ~F_SHM, size=0,
                           max_data=65536))
    dec.feed(fuzz_input)        # a list of messages, or ProtocolError

Shared memory (SOFTDEV_TAP_F_SHM): the Decoder also moves the data of
REQUESTs and REPLYs between messages and the slots, so its owner always
sees whole messages: a REQUEST or REPLY object carries its data in `data`
whether the wire carried it or the slot did.  The owner passes
map_shm=callable; when the SHM_SETUP is received (device) or sent
(client), the Decoder calls map_shm(setup) for the region, a writable
buffer of setup.slots * setup.slot_size bytes (an mmap.mmap, or a
bytearray in tests), and from then on copies a received WRITE's data out
of its slot, and a sent READ reply's data into it (and so on).  map_shm
may raise ProtocolError (no fd came with the SHM_SETUP, ...).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Callable, ClassVar, Union

MAGIC = 0x50544453              # the bytes "SDTP"
VERSION = 1
CLASS_BLOCK = 1                 # 2 net and 3 USB are reserved

FLAG_REPLAY = 1 << 0            # header flag: a REQUEST sent again

TYPE_HELLO = 1
TYPE_HELLO_REPLY = 2
TYPE_SHM_SETUP = 3
TYPE_KICK = 4                   # with F_RING, either direction
TYPE_REQUEST = 16
TYPE_REPLY = 17
TYPE_LOWER_REQUEST = 32
TYPE_LOWER_REPLY = 33
TYPE_NAMES = {
    TYPE_HELLO: 'HELLO', TYPE_HELLO_REPLY: 'HELLO_REPLY',
    TYPE_SHM_SETUP: 'SHM_SETUP', TYPE_KICK: 'KICK',
    TYPE_REQUEST: 'REQUEST', TYPE_REPLY: 'REPLY',
    TYPE_LOWER_REQUEST: 'LOWER_REQUEST', TYPE_LOWER_REPLY: 'LOWER_REPLY',
}

OP_READ = 0
OP_WRITE = 1
OP_WRITE_ZEROES = 2
OP_DISCARD = 3
OP_FLUSH = 4
OP_NAMES = {OP_READ: 'READ', OP_WRITE: 'WRITE',
            OP_WRITE_ZEROES: 'WRITE_ZEROES', OP_DISCARD: 'DISCARD',
            OP_FLUSH: 'FLUSH'}

REQ_FUA = 1 << 0
REQ_MAY_UNMAP = 1 << 1
REQ_BELOW = 1 << 2              # READ: its slot holds the data below
REQ_ALL = REQ_FUA | REQ_MAY_UNMAP | REQ_BELOW

F_FLUSH = 1 << 0
F_DISCARD = 1 << 1
F_ZEROES = 1 << 2
F_FUA = 1 << 3
F_LOWER = 1 << 4
F_SHM = 1 << 5                  # shared-memory data path (unix sockets)
# What the Python device implements (it declines the two below)
F_ALL = F_FLUSH | F_DISCARD | F_ZEROES | F_FUA | F_LOWER | F_SHM
F_RING = 1 << 6                 # requests and replies in shared-memory rings
F_NO_WRITE_DATA = 1 << 7        # the device does not read WRITE data
F_EARLY_READ = 1 << 8           # forwarded READs may use data read early
F_EARLY_WRITE = 1 << 9          # WRITEs may go below before the answer
F_READ_BELOW = 1 << 10          # READs may come with the data below
FEATURE_NAMES = {F_FLUSH: 'SOFTDEV_TAP_F_FLUSH',
                 F_DISCARD: 'SOFTDEV_TAP_F_DISCARD',
                 F_ZEROES: 'SOFTDEV_TAP_F_ZEROES', F_FUA: 'SOFTDEV_TAP_F_FUA',
                 F_LOWER: 'SOFTDEV_TAP_F_LOWER', F_SHM: 'SOFTDEV_TAP_F_SHM',
                 F_RING: 'SOFTDEV_TAP_F_RING',
                 F_NO_WRITE_DATA: 'SOFTDEV_TAP_F_NO_WRITE_DATA',
                 F_EARLY_READ: 'SOFTDEV_TAP_F_EARLY_READ',
                 F_EARLY_WRITE: 'SOFTDEV_TAP_F_EARLY_WRITE',
                 F_READ_BELOW: 'SOFTDEV_TAP_F_READ_BELOW'}

# Rings (F_RING): after the slots, a control block of RING_CTL_SIZE
# bytes, then the request ring and the reply ring, ring_entries entries
# of RING_ENTRY bytes each; an entry is a REQUEST or REPLY message without
# data.  Control words (32 bits) at these offsets in the control block:
RING_CTL_SIZE = 4096
RING_ENTRY = 64
RING_REQ_PROD = 0               # written by the client
RING_REP_PROD = 64              # written by the device
RING_DEV_IDLE = 128             # 1: the device waits for a KICK
RING_CLI_IDLE = 192             # 1: the client waits for a KICK
# Requests of these ops reach the device only if it accepted the bit.
OP_FEATURE = {OP_FLUSH: F_FLUSH, OP_DISCARD: F_DISCARD,
              OP_WRITE_ZEROES: F_ZEROES}

ACTION_COMPLETE = 0
ACTION_FORWARD = 1

HEADER = struct.Struct('<IHHQII')       # magic type flags handle length rsvd
HELLO = struct.Struct('<IIQQIIQ')
HELLO_REPLY = struct.Struct('<IIQQII')
SHM_SETUP = struct.Struct('<IIII')      # slots slot_size ring_entries rsvd
REQUEST = struct.Struct('<HHIQQ')       # REQUEST and LOWER_REQUEST
REPLY = struct.Struct('<iIQQ')
LOWER_REPLY = struct.Struct('<iIQ')
HEADER_SIZE = HEADER.size               # 24
RING_MSG_SIZE = HEADER_SIZE + REQUEST.size  # a ring entry's message: 48
FIXED_SIZE = {TYPE_HELLO: HELLO.size, TYPE_HELLO_REPLY: HELLO_REPLY.size,
              TYPE_SHM_SETUP: SHM_SETUP.size, TYPE_KICK: 0,
              TYPE_REQUEST: REQUEST.size, TYPE_REPLY: REPLY.size,
              TYPE_LOWER_REQUEST: REQUEST.size,
              TYPE_LOWER_REPLY: LOWER_REPLY.size}
EXACT_SIZE = (TYPE_HELLO, TYPE_HELLO_REPLY, TYPE_SHM_SETUP, TYPE_KICK)

MIN_MAX_DATA = 65536            # the least max_data
MAX_MAX_DATA = 16 << 20         # the largest max_data
MAX_INFLIGHT = 1024             # the largest max_inflight
DEFAULT_MAX_INFLIGHT = 64       # what QEMU offers by default
HANDSHAKE_MAX_LENGTH = 4096     # length bound before the handshake is done
MAX_RANGE = 1 << 31             # most bytes of a WRITE_ZEROES or DISCARD
MAX_ERRNO = 4095                # results are 0 or -1 .. -MAX_ERRNO

DEVICE = 'device'
CLIENT = 'client'
SENDS = {CLIENT: (TYPE_HELLO, TYPE_SHM_SETUP, TYPE_REQUEST,
                  TYPE_LOWER_REPLY, TYPE_KICK),
         DEVICE: (TYPE_HELLO_REPLY, TYPE_REPLY, TYPE_LOWER_REQUEST,
                  TYPE_KICK)}


class ProtocolError(Exception):
    """The peer (or, from Decoder.sending, we) broke a rule of the spec."""


@dataclass
class Hello:
    TYPE: ClassVar[int] = TYPE_HELLO
    features: int
    lower_size: int             # meaningful only if F_LOWER is offered
    max_data: int = MIN_MAX_DATA
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    version: int = VERSION
    device_class: int = CLASS_BLOCK
    handle: int = 0

    def payload(self, shm: bool = False) -> bytes:
        return HELLO.pack(self.version, self.device_class, self.features,
                          self.lower_size, self.max_data, self.max_inflight,
                          0)


@dataclass
class HelloReply:
    TYPE: ClassVar[int] = TYPE_HELLO_REPLY
    features: int
    size: int                   # 0: the size of the node below
    max_data: int
    max_inflight: int = 0       # 0: the client's
    version: int = VERSION
    device_class: int = CLASS_BLOCK
    handle: int = 0

    def payload(self, shm: bool = False) -> bytes:
        return HELLO_REPLY.pack(self.version, self.device_class,
                                self.features, self.size, self.max_data,
                                self.max_inflight)


@dataclass
class ShmSetup:
    """SHM_SETUP; its file descriptor travels beside it (SCM_RIGHTS)."""
    TYPE: ClassVar[int] = TYPE_SHM_SETUP
    slots: int                  # = the negotiated max_inflight
    slot_size: int              # = the negotiated max_data
    handle: int = 0
    ring_entries: int = 0       # with F_RING: a power of two >= slots

    def payload(self, shm: bool = False) -> bytes:
        return SHM_SETUP.pack(self.slots, self.slot_size, self.ring_entries,
                              0)

    @property
    def region_size(self) -> int:
        """Bytes of shared memory: the slots, then the rings."""
        size = self.slots * self.slot_size
        if self.ring_entries:
            size += RING_CTL_SIZE + 2 * self.ring_entries * RING_ENTRY
        return size


@dataclass
class Kick:
    """KICK (F_RING): look at your ring."""
    TYPE: ClassVar[int] = TYPE_KICK
    handle: int = 0

    def payload(self, shm: bool = False) -> bytes:
        return b''


@dataclass
class Request:
    """A REQUEST; `length` is the wire field `bytes`.  `data` is a WRITE's
    data, inline or (with SHM) from its slot; `replay` is the header flag
    REPLAY (REQUESTs only)."""
    TYPE: ClassVar[int] = TYPE_REQUEST
    handle: int
    op: int
    offset: int = 0
    length: int = 0
    flags: int = 0
    data: bytes = b''
    slot: int = 0               # with SHM: the request's slot, else 0
    replay: bool = False

    def payload(self, shm: bool = False) -> bytes:
        return REQUEST.pack(self.op, self.flags, self.slot, self.offset,
                            self.length) + (b'' if shm else self.data)


@dataclass
class LowerRequest(Request):
    TYPE: ClassVar[int] = TYPE_LOWER_REQUEST


@dataclass
class Reply:
    """A REPLY; the wire field `bytes` is len(data), also with SHM, where
    the data travels in the request's slot instead of the message."""
    TYPE: ClassVar[int] = TYPE_REPLY
    handle: int
    result: int = 0
    action: int = ACTION_COMPLETE
    offset: int = 0
    data: bytes = b''

    def payload(self, shm: bool = False) -> bytes:
        return REPLY.pack(self.result, self.action, self.offset,
                          len(self.data)) + (b'' if shm else self.data)


@dataclass
class LowerReply:
    """A LOWER_REPLY; the wire field `bytes` is len(data)."""
    TYPE: ClassVar[int] = TYPE_LOWER_REPLY
    handle: int
    result: int = 0
    data: bytes = b''

    def payload(self, shm: bool = False) -> bytes:
        return LOWER_REPLY.pack(self.result, 0, len(self.data)) + self.data


Message = Union[Hello, HelloReply, ShmSetup, Kick, Request, LowerRequest,
                Reply, LowerReply]


def encode(msg: Message, shm: bool = False) -> bytes:
    """Wire bytes of msg, without checking any rule (tests use it to build
    bad input; real peers use Decoder.sending).  shm: SOFTDEV_TAP_F_SHM is
    in effect, so the data of a REQUEST or REPLY is left out (it belongs
    in the slot)."""
    payload = msg.payload(shm and msg.TYPE in (TYPE_REQUEST, TYPE_REPLY))
    flags = FLAG_REPLAY if getattr(msg, 'replay', False) else 0
    return HEADER.pack(MAGIC, msg.TYPE, flags, msg.handle, len(payload),
                       0) + payload


def _name(msg_or_type) -> str:
    t = msg_or_type if isinstance(msg_or_type, int) else msg_or_type.TYPE
    return TYPE_NAMES.get(t, f'type {t}')


def parse(t: int, handle: int, p: bytes, flags: int = 0,
          shm: bool = False) -> Message:
    """Build the message of type t from its payload, checking the rules
    that need no connection state: fixed size, reserved fields, and the
    `bytes` field of replies against the data that follows.  flags: the
    header's.  shm: SOFTDEV_TAP_F_SHM is in effect, so a REQUEST or REPLY
    must carry no data (the Decoder fetches it from the slot; a REPLY's
    `bytes` field is then not checked here)."""
    name, fixed = _name(t), FIXED_SIZE[t]
    if t in EXACT_SIZE and len(p) != fixed:
        raise ProtocolError(f'{name} payload is {len(p)} bytes, '
                            f'must be {fixed}')
    if len(p) < fixed:
        raise ProtocolError(f'{name} payload is {len(p)} bytes, shorter '
                            f'than its {fixed}-byte fixed part')
    in_slot = shm and t in (TYPE_REQUEST, TYPE_REPLY)
    if in_slot and len(p) != fixed:
        raise ProtocolError(f'{name} carries {len(p) - fixed} inline data '
                            f'bytes; with SOFTDEV_TAP_F_SHM its data is in '
                            f'the slot')
    if t == TYPE_HELLO:
        version, cls, features, lower_size, max_data, max_inflight, r1 = \
            HELLO.unpack(p)
        if r1:
            raise ProtocolError('HELLO reserved field must be 0')
        return Hello(features, lower_size, max_data, max_inflight, version,
                     cls, handle)
    if t == TYPE_HELLO_REPLY:
        version, cls, features, size, max_data, max_inflight = \
            HELLO_REPLY.unpack(p)
        return HelloReply(features, size, max_data, max_inflight, version,
                          cls, handle)
    if t == TYPE_SHM_SETUP:
        slots, slot_size, ring_entries, r1 = SHM_SETUP.unpack(p)
        if r1:
            raise ProtocolError('SHM_SETUP reserved field must be 0')
        return ShmSetup(slots, slot_size, handle, ring_entries)
    if t == TYPE_KICK:
        return Kick(handle)
    if t in (TYPE_REQUEST, TYPE_LOWER_REQUEST):
        op, req_flags, slot, offset, length = REQUEST.unpack_from(p)
        cls = Request if t == TYPE_REQUEST else LowerRequest
        return cls(handle, op, offset, length, req_flags, p[fixed:], slot,
                   bool(flags & FLAG_REPLAY))
    if t == TYPE_REPLY:
        result, action, offset, nbytes = REPLY.unpack_from(p)
    else:
        result, r1, nbytes = LOWER_REPLY.unpack_from(p)
        if r1:
            raise ProtocolError('LOWER_REPLY reserved field must be 0')
    if not in_slot and nbytes != len(p) - fixed:
        raise ProtocolError(f'{name} bytes field says {nbytes} but '
                            f'{len(p) - fixed} data bytes follow')
    if t == TYPE_REPLY:
        return Reply(handle, result, action, offset, p[fixed:])
    return LowerReply(handle, result, p[fixed:])


class Decoder:
    """Strict incremental decoder of what the peer of `side` sends.

    feed(data) returns the complete messages in data (keeping any partial
    one for the next call; `pending` counts its bytes) and raises
    ProtocolError at the first rule broken; the decoder then stays failed.
    sending(msg) checks a message the owner is about to send, records it
    and returns its wire bytes; a ProtocolError from it means the message
    must not be sent (and nothing was recorded).  Thread-safe: one reader
    may feed while others send.  map_shm: see the module docstring.

    After the handshake, hello, hello_reply, features, max_data,
    max_inflight (resolved: never 0), size (of the device), has_lower and
    lower_size (0 without a node below) hold the negotiated values; with
    SHM, shm_setup and shm (the region) too.  requests and lower_requests
    map the outstanding handles to their requests.
    """

    def __init__(self, side: str,
                 map_shm: Callable[[ShmSetup], object] | None = None):
        if side not in (DEVICE, CLIENT):
            raise ValueError(f'side must be {DEVICE!r} or {CLIENT!r}')
        self.side = side
        self.peer = CLIENT if side == DEVICE else DEVICE
        self.map_shm = map_shm
        self.hello: Hello | None = None
        self.hello_reply: HelloReply | None = None
        self.shm_setup: ShmSetup | None = None
        self.shm = None                 # the region, once mapped
        self.features = self.max_data = self.max_inflight = 0
        self.size = self.lower_size = 0
        self.has_lower = False
        self.requests: dict[int, Request] = {}
        self.lower_requests: dict[int, LowerRequest] = {}
        self.error: str | None = None
        self._slot_users: dict[int, int] = {}   # slot -> handle
        self._buf = bytearray()
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        """The handshake is over (HELLO_REPLY, and SHM_SETUP if needed)."""
        return self.hello_reply is not None and \
            (not self.features & F_SHM or self.shm_setup is not None)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message kept for the next feed()."""
        return len(self._buf)

    @property
    def awaiting_shm_setup(self) -> bool:
        return self.hello_reply is not None and \
            bool(self.features & F_SHM) and self.shm_setup is None

    def feed(self, data: bytes, ring: bool = False) -> list[Message]:
        """ring: data is one ring entry (F_RING), which must be a REQUEST
        or REPLY without data; with F_RING those come only from the
        rings."""
        with self._lock:
            if self.error is not None:
                raise ProtocolError(f'decoder already failed: {self.error}')
            self._buf += data
            out = []
            try:
                while len(self._buf) >= HEADER_SIZE:
                    t, flags, handle, length = self._check_header(
                        *HEADER.unpack_from(self._buf))
                    end = HEADER_SIZE + length
                    if len(self._buf) < end:
                        break
                    payload = bytes(self._buf[HEADER_SIZE:end])
                    del self._buf[:end]
                    if self.features & F_RING and \
                            (t in (TYPE_REQUEST, TYPE_REPLY)) != ring:
                        raise ProtocolError(
                            f'{_name(t)} in a ring entry' if ring else
                            f'{_name(t)} outside the ring, with '
                            f'SOFTDEV_TAP_F_RING')
                    in_slot = bool(self.features & F_SHM) and \
                        t in (TYPE_REQUEST, TYPE_REPLY)
                    msg = parse(t, handle, payload, flags, in_slot)
                    if in_slot and self.shm is not None:
                        self._fetch(msg, payload)
                    self._check(msg, self.peer)
                    out.append(msg)
            except ProtocolError as e:
                self.error = str(e)
                raise
            return out

    def sending(self, msg: Message) -> bytes:
        with self._lock:
            in_slot = bool(self.features & F_SHM) and \
                msg.TYPE in (TYPE_REQUEST, TYPE_REPLY)
            try:
                wire = encode(msg, in_slot)
            except (struct.error, TypeError) as e:
                raise ProtocolError(f'cannot encode {_name(msg)}: {e}')
            # a REPLY's slot is its request's (forgotten by _check)
            req = self.requests.get(msg.handle) if in_slot else None
            self._check(msg, self.side)
            if in_slot and msg.data:
                slot = req.slot if isinstance(msg, Reply) else msg.slot
                self.shm[self._slot_range(slot, len(msg.data))] = msg.data
            return wire

    # -- shared memory ----------------------------------------------------

    def _slot_range(self, slot: int, n: int) -> slice:
        start = slot * self.shm_setup.slot_size
        return slice(start, start + n)

    def _fetch(self, msg: Message, payload: bytes):
        """Fill the data of a received REQUEST or REPLY from its slot."""
        if isinstance(msg, Request):
            if (msg.op == OP_WRITE or msg.flags & REQ_BELOW) and \
                    msg.slot < self.shm_setup.slots and \
                    1 <= msg.length <= self.shm_setup.slot_size:
                msg.data = bytes(self.shm[self._slot_range(msg.slot,
                                                           msg.length)])
            return
        nbytes = REPLY.unpack_from(payload)[3]
        req = self.requests.get(msg.handle)
        if req is None or not nbytes:
            return                      # _check reports what is wrong
        if nbytes > self.shm_setup.slot_size:
            raise ProtocolError(f'REPLY bytes field says {nbytes}, more '
                                f'than the slot size '
                                f'{self.shm_setup.slot_size}')
        msg.data = bytes(self.shm[self._slot_range(req.slot, nbytes)])

    # -- rules ----------------------------------------------------------

    def _check_header(self, magic, t, flags, handle, length, reserved):
        if magic != MAGIC:
            raise ProtocolError(f'bad magic {magic:#010x} (must be '
                                f'{MAGIC:#010x}, "SDTP")')
        if reserved:
            raise ProtocolError(f'header reserved field must be 0, '
                                f'not {reserved:#x}')
        if t not in TYPE_NAMES:
            raise ProtocolError(f'unknown message type {t}')
        if t == TYPE_REQUEST:
            if flags & ~FLAG_REPLAY:
                raise ProtocolError(f'REQUEST header flags {flags:#x} have '
                                    f'bits other than REPLAY')
        elif flags:
            raise ProtocolError(f'{_name(t)} header flags must be 0, not '
                                f'{flags:#x}')
        if t not in SENDS[self.peer]:
            raise ProtocolError(f'{_name(t)} is sent by the {self.side}, '
                                f'not the {self.peer}')
        if self.hello_reply is None:
            if length > HANDSHAKE_MAX_LENGTH:
                raise ProtocolError(f'{_name(t)} length {length} exceeds '
                                    f'{HANDSHAKE_MAX_LENGTH} before the '
                                    f'handshake is complete')
        elif length > self.max_data + FIXED_SIZE[t]:
            raise ProtocolError(f'{_name(t)} length {length} exceeds '
                                f'max_data {self.max_data} + '
                                f'{FIXED_SIZE[t]}')
        return t, flags, handle, length

    def _check(self, msg: Message, sender: str):
        """Check msg as sent by `sender`; record it only if it is valid."""
        name = _name(msg)
        if msg.TYPE not in SENDS[sender]:
            raise ProtocolError(f'{name} is not sent by the {sender}')
        if isinstance(msg, Hello):
            if self.hello is not None:
                raise ProtocolError('second HELLO')
            self._check_hello(msg)
            self.hello = msg
            return
        if self.hello is None:
            raise ProtocolError(f'{name} before HELLO')
        if isinstance(msg, HelloReply):
            if self.hello_reply is not None:
                raise ProtocolError('second HELLO_REPLY')
            self._check_hello_reply(msg)
            self.hello_reply = msg
            hello = self.hello
            self.features, self.max_data = msg.features, msg.max_data
            self.max_inflight = msg.max_inflight or hello.max_inflight
            self.has_lower = bool(hello.features & F_LOWER)
            self.lower_size = hello.lower_size if self.has_lower else 0
            self.size = msg.size or self.lower_size
            return
        if self.hello_reply is None:
            raise ProtocolError(f'{name} before the handshake is complete')
        if isinstance(msg, ShmSetup):
            self._check_shm_setup(msg)
            return
        if self.awaiting_shm_setup:
            raise ProtocolError(f'{name} before SHM_SETUP')
        if isinstance(msg, Kick):
            if not self.features & F_RING:
                raise ProtocolError('KICK but SOFTDEV_TAP_F_RING was not '
                                    'negotiated')
            if msg.handle:
                raise ProtocolError(f'KICK handle must be 0, not '
                                    f'{msg.handle}')
            return
        if isinstance(msg, LowerRequest):
            if not self.features & F_LOWER:
                raise ProtocolError('LOWER_REQUEST but SOFTDEV_TAP_F_LOWER '
                                    'was not negotiated')
            if msg.replay:
                raise ProtocolError('LOWER_REQUEST with the REPLAY flag')
            if msg.slot:
                raise ProtocolError(f'LOWER_REQUEST slot field must be 0, '
                                    f'not {msg.slot}')
            self._check_request(msg, self.lower_size, 'the lower node size')
            if msg.handle in self.lower_requests:
                raise ProtocolError(f'LOWER_REQUEST handle {msg.handle} is '
                                    f'already outstanding')
            self.lower_requests[msg.handle] = msg
        elif isinstance(msg, Request):
            self._check_slot(msg)
            gate = OP_FEATURE.get(msg.op, 0)
            if gate and not self.features & gate:
                raise ProtocolError(f'REQUEST {OP_NAMES[msg.op]} but '
                                    f'{FEATURE_NAMES[gate]} was not '
                                    f'negotiated')
            if msg.flags & REQ_FUA and not self.features & F_FUA:
                raise ProtocolError('REQUEST carries FUA but '
                                    'SOFTDEV_TAP_F_FUA was not negotiated')
            if msg.flags & REQ_BELOW and not self.features & F_READ_BELOW:
                raise ProtocolError('REQUEST carries BELOW but '
                                    'SOFTDEV_TAP_F_READ_BELOW was not '
                                    'negotiated')
            self._check_request(msg, self.size, 'the device size')
            if msg.handle in self.requests:
                raise ProtocolError(f'REQUEST handle {msg.handle} is '
                                    f'already outstanding')
            if len(self.requests) >= self.max_inflight:
                raise ProtocolError(f'REQUEST handle {msg.handle} exceeds '
                                    f'max_inflight {self.max_inflight} '
                                    f'outstanding REQUESTs')
            self.requests[msg.handle] = msg
            if self.shm_setup is not None:
                self._slot_users[msg.slot] = msg.handle
        elif isinstance(msg, Reply):
            req = self.requests.get(msg.handle)
            if req is None:
                raise ProtocolError(f'REPLY to handle {msg.handle}, which '
                                    f'is not an outstanding REQUEST')
            self._check_reply(msg, req)
            del self.requests[msg.handle]
            if self.shm_setup is not None:
                del self._slot_users[req.slot]
        else:
            req = self.lower_requests.get(msg.handle)
            if req is None:
                raise ProtocolError(f'LOWER_REPLY to handle {msg.handle}, '
                                    f'which is not an outstanding '
                                    f'LOWER_REQUEST')
            _check_result('LOWER_REPLY', msg.result)
            want = req.length if (req.op == OP_READ and msg.result == 0) \
                else 0
            if len(msg.data) != want:
                raise ProtocolError(
                    f'LOWER_REPLY to a {OP_NAMES[req.op]} with result '
                    f'{msg.result} carries {len(msg.data)} data bytes, '
                    f'must be {want}')
            del self.lower_requests[msg.handle]

    def _check_hello(self, msg: Hello):
        if msg.handle:
            raise ProtocolError(f'HELLO handle must be 0, not {msg.handle}')
        if msg.version != VERSION:
            raise ProtocolError(f'HELLO version {msg.version}, only '
                                f'{VERSION} is known')
        if msg.device_class != CLASS_BLOCK:
            raise ProtocolError(f'HELLO device class {msg.device_class} is '
                                f'not 1 (block); 2 and 3 are reserved')
        if not MIN_MAX_DATA <= msg.max_data <= MAX_MAX_DATA:
            raise ProtocolError(f'HELLO max_data {msg.max_data} is not '
                                f'{MIN_MAX_DATA} to {MAX_MAX_DATA}')
        if not 1 <= msg.max_inflight <= MAX_INFLIGHT:
            raise ProtocolError(f'HELLO max_inflight {msg.max_inflight} is '
                                f'not 1 to {MAX_INFLIGHT}')
        # Offered feature bits this side does not know are fine: the
        # device ignores them (so newer clients talk to older devices).

    def _check_hello_reply(self, msg: HelloReply):
        hello = self.hello
        if msg.handle:
            raise ProtocolError(f'HELLO_REPLY handle must be 0, not '
                                f'{msg.handle}')
        if msg.version != VERSION:
            raise ProtocolError(f'HELLO_REPLY version {msg.version}, only '
                                f'{VERSION} is known')
        if msg.device_class != hello.device_class:
            raise ProtocolError(f'HELLO_REPLY device class '
                                f'{msg.device_class} differs from the '
                                f"client's {hello.device_class}")
        if msg.features & ~hello.features:
            raise ProtocolError(f'HELLO_REPLY accepts feature bits '
                                f'{msg.features & ~hello.features:#x} '
                                f'that were not offered')
        if not MIN_MAX_DATA <= msg.max_data <= hello.max_data:
            raise ProtocolError(f'HELLO_REPLY max_data {msg.max_data} is '
                                f'not {MIN_MAX_DATA} to the offered '
                                f'{hello.max_data}')
        if msg.max_inflight > hello.max_inflight:
            raise ProtocolError(f'HELLO_REPLY max_inflight '
                                f'{msg.max_inflight} exceeds the offered '
                                f'{hello.max_inflight}')
        if msg.size == 0 and not hello.features & F_LOWER:
            raise ProtocolError('HELLO_REPLY size 0 (the size of the node '
                                'below) but there is no node below')

    def _check_shm_setup(self, msg: ShmSetup):
        if msg.handle:
            raise ProtocolError(f'SHM_SETUP handle must be 0, not '
                                f'{msg.handle}')
        if not self.features & F_SHM:
            raise ProtocolError('SHM_SETUP but SOFTDEV_TAP_F_SHM was not '
                                'negotiated')
        if self.shm_setup is not None:
            raise ProtocolError('second SHM_SETUP')
        n = msg.ring_entries
        if not self.features & F_RING:
            if n:
                raise ProtocolError('SHM_SETUP reserved field must be 0')
        elif n & (n - 1) or not msg.slots <= n <= MAX_INFLIGHT:
            raise ProtocolError(f'SHM_SETUP ring_entries {n} is not a '
                                f'power of two from slots to '
                                f'{MAX_INFLIGHT}')
        if (msg.slots, msg.slot_size) != (self.max_inflight, self.max_data):
            raise ProtocolError(f'SHM_SETUP geometry {msg.slots} slots of '
                                f'{msg.slot_size} bytes differs from the '
                                f'handshake: max_inflight '
                                f'{self.max_inflight}, max_data '
                                f'{self.max_data}')
        if self.map_shm is None:
            raise ProtocolError('SHM_SETUP but this decoder has no map_shm '
                                'to map the shared memory')
        region = self.map_shm(msg)
        if region is None or len(region) < msg.region_size:
            raise ProtocolError('the shared memory of SHM_SETUP could not '
                                'be mapped')
        self.shm_setup, self.shm = msg, region

    def _check_slot(self, msg: Request):
        if self.shm_setup is None:
            if msg.slot:
                raise ProtocolError(f'REQUEST slot field must be 0 without '
                                    f'SOFTDEV_TAP_F_SHM, not {msg.slot}')
            return
        if msg.slot >= self.shm_setup.slots:
            raise ProtocolError(f'REQUEST slot {msg.slot} out of range '
                                f'({self.shm_setup.slots} slots)')
        user = self._slot_users.get(msg.slot)
        if user is not None:
            raise ProtocolError(f'REQUEST handle {msg.handle} uses slot '
                                f'{msg.slot}, which outstanding handle '
                                f'{user} uses')

    def _check_request(self, msg: Request, size: int, size_name: str):
        name = _name(msg)
        op = OP_NAMES.get(msg.op)
        if op is None:
            raise ProtocolError(f'{name} has unknown op {msg.op}')
        if msg.flags & ~REQ_ALL:
            raise ProtocolError(f'{name} req_flags {msg.flags:#x} has '
                                f'undefined bits')
        if msg.flags & REQ_BELOW and (
                msg.op != OP_READ or isinstance(msg, LowerRequest) or
                self.shm_setup is None):
            raise ProtocolError(f'{name} BELOW only on a READ whose data '
                                f'lies in its slot')
        if msg.op in (OP_READ, OP_WRITE):
            if not 1 <= msg.length <= self.max_data:
                raise ProtocolError(f'{name} {op} of {msg.length} bytes: '
                                    f'must be 1 to max_data '
                                    f'{self.max_data}')
        elif msg.op == OP_FLUSH:
            if msg.offset or msg.length or msg.flags:
                raise ProtocolError(f'{name} FLUSH must have offset, bytes '
                                    f'and req_flags 0')
        elif msg.length > MAX_RANGE:
            raise ProtocolError(f'{name} {op} of {msg.length} bytes: more '
                                f'than 2^31')
        want = msg.length if msg.op == OP_WRITE or msg.flags & REQ_BELOW \
            else 0
        if len(msg.data) != want:
            raise ProtocolError(f'{name} {op} carries {len(msg.data)} data '
                                f'bytes, must be {want}')
        if msg.offset + msg.length > size:
            raise ProtocolError(f'{name} {op} at {msg.offset}+{msg.length} '
                                f'exceeds {size_name} {size}')

    def _check_reply(self, msg: Reply, req: Request):
        op = OP_NAMES[req.op]
        _check_result('REPLY', msg.result)
        if msg.action == ACTION_COMPLETE:
            if msg.offset:
                raise ProtocolError(f'COMPLETE must have offset 0, not '
                                    f'{msg.offset}')
            want = req.length if (req.op == OP_READ and msg.result == 0) \
                else 0
            if len(msg.data) != want:
                raise ProtocolError(f'COMPLETE of a {op} with result '
                                    f'{msg.result} carries {len(msg.data)} '
                                    f'data bytes, must be {want}')
        elif msg.action == ACTION_FORWARD:
            if msg.result:
                raise ProtocolError(f'FORWARD result must be 0, not '
                                    f'{msg.result}')
            if not self.has_lower:
                raise ProtocolError('FORWARD but there is no node below')
            if req.op == OP_WRITE and len(msg.data) in (0, req.length):
                pass
            elif msg.data:
                raise ProtocolError(f'FORWARD of a {op} carries '
                                    f'{len(msg.data)} data bytes')
            if req.op == OP_FLUSH:
                if msg.offset:
                    raise ProtocolError('FORWARD of a FLUSH must have '
                                        'offset 0')
            elif msg.offset + req.length > self.lower_size:
                raise ProtocolError(f'FORWARD of a {op} to {msg.offset}+'
                                    f'{req.length} exceeds the lower node '
                                    f'size {self.lower_size}')
        else:
            raise ProtocolError(f'REPLY has unknown action {msg.action}')


def _check_result(name: str, result: int):
    if not -MAX_ERRNO <= result <= 0:
        raise ProtocolError(f'{name} result must be 0 or a negative errno '
                            f'(-1 to -{MAX_ERRNO}), not {result}')
