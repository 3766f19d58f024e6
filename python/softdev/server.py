"""
Serves a BlockDevice over the tap protocol: Connection runs one accepted
socket (handshake, shared memory, reader thread, handlers, batched
replies); Server listens on a unix, TCP or vsock socket and serves one
client at a time, so QEMU can reconnect.  The thread model is described
in device.py.

SPDX-License-Identifier: GPL-2.0-or-later
"""

from __future__ import annotations

import array
import dataclasses
import errno
import itertools
import logging
import mmap
import os
import queue
import socket
import stat
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

from . import protocol as p
from .device import BlockDevice, ConnectionLost, DeviceError

log = logging.getLogger('softdev')

RECV_SIZE = 1 << 16         # bytes per read; a read may hold many messages
MAX_FDS = 4                 # room for more fds than allowed, to see them
MAX_DEFERRED = 32           # replies held back for one write, at most


class _Waiter:
    """A handler waiting for the LOWER_REPLY to one LOWER_REQUEST."""

    def __init__(self):
        self.done = threading.Event()
        self.reply: p.LowerReply | None = None     # None: connection lost


class Connection:
    """One client connection.  run() returns when the client has gone (or
    broke the protocol) and no handler of this connection is running.

    Sending: every message is queued and written by whichever thread
    finds the socket idle, together with whatever else is queued by then,
    so replies that are ready together go out in one write.  With one
    handler thread, the reply to a request is also held back while more
    received requests wait (up to MAX_DEFERRED), so a batch of requests
    is answered by a batch of replies.

    Shared memory (unix sockets only): the SHM_SETUP's file descriptor
    arrives beside it (SCM_RIGHTS); it is mapped MAP_SHARED for the life
    of the connection, and the decoder moves data between the slots and
    the messages, so handlers see no difference."""

    def __init__(self, device: BlockDevice, sock: socket.socket,
                 handshake_timeout: float = 10.0):
        self.device = device
        self.sock = sock
        self.handshake_timeout = handshake_timeout
        self.unix = sock.family == socket.AF_UNIX
        self.decoder = p.Decoder(p.DEVICE, map_shm=self._map_shm)
        self.closed = False
        self.shm: mmap.mmap | None = None
        self._fds: list[int] = []       # received, not yet claimed
        self._fds_truncated = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._out: list[bytes] = []     # wire bytes queued for sending
        self._writing = False           # a thread is in sendall()
        self._waiters: dict[int, _Waiter] = {}
        self._handles = itertools.count(1)

    def run(self):
        try:
            early = self._handshake()
            if early is not None:
                self._dispatch(early)
                reader = threading.Thread(target=self._read_loop,
                                          name='softdev-reader', daemon=True)
                reader.start()
                self._serve_requests()
                self.close()
                reader.join()
        finally:
            self.close()
            self.sock.close()
            self._close_fds()
            if self.shm is not None:
                self.shm.close()
            if self.device.connection is self:
                self.device.connection = None

    def close(self):
        """Drop the connection; handlers waiting below get ConnectionLost."""
        with self._state_lock:
            if self.closed:
                return
            self.closed = True
            waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.done.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def lower(self, op, offset, length, data=b'', flags=0):
        """Send a LOWER_REQUEST and wait for its (result, data)."""
        waiter = _Waiter()
        with self._state_lock:
            if self.closed:
                raise ConnectionLost()
            handle = next(self._handles)
            self._waiters[handle] = waiter
        try:
            self._send(p.LowerRequest(handle, op, offset, length, flags,
                                      data))
        except p.ProtocolError as e:
            with self._state_lock:
                self._waiters.pop(handle, None)
            log.error('device bug: %s', e)
            raise DeviceError(errno.EINVAL, f'bad lower request: {e}') \
                from None
        waiter.done.wait()
        if waiter.reply is None:
            raise ConnectionLost()
        return waiter.reply.result, waiter.reply.data

    # -- sending ----------------------------------------------------------

    def _send(self, msg, flush: bool = True):
        """Check, record and queue msg, and unless flush is False write
        the queue; dropped if the connection is gone.  ProtocolError means
        msg breaks the spec and was not sent."""
        with self._send_lock:
            if self.closed:
                if isinstance(msg, p.LowerRequest):
                    raise ConnectionLost()
                return
            self._out.append(self.decoder.sending(msg))
        if flush:
            self._flush()

    def _flush(self):
        """Write everything queued.  One thread writes at a time; a thread
        that finds another writing leaves its bytes to it."""
        while True:
            with self._send_lock:
                if self._writing or not self._out or self.closed:
                    return
                self._writing = True
                data = b''.join(self._out)
                self._out.clear()
            try:
                self.sock.sendall(data)
            except OSError as e:
                log.info('send failed: %s', e)
                self.close()
            finally:
                with self._send_lock:
                    self._writing = False

    # -- receiving --------------------------------------------------------

    def _receive(self) -> list[p.Message] | None:
        """Read once and decode: the messages completed (often several),
        or None at EOF.  File descriptors are kept for the SHM_SETUP."""
        if self.unix:
            data, ancdata, flags, _ = self.sock.recvmsg(
                RECV_SIZE, socket.CMSG_SPACE(MAX_FDS * 4))
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array('i')
                    fds.frombytes(cdata[:len(cdata) - len(cdata) % 4])
                    self._fds += fds
            if flags & socket.MSG_CTRUNC:
                self._fds_truncated = True
        else:
            data = self.sock.recv(RECV_SIZE)
        if not data:
            return None
        msgs = self.decoder.feed(data)
        if (self._fds or self._fds_truncated) and \
                not self.decoder.awaiting_shm_setup:
            n = len(self._fds)
            self._close_fds()
            raise p.ProtocolError(f'{n} file descriptor(s) received '
                                  f'outside SHM_SETUP')
        return msgs

    def _close_fds(self):
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def _map_shm(self, setup: p.ShmSetup) -> mmap.mmap:
        """The decoder's map_shm: map the fd that came with SHM_SETUP."""
        fds, truncated = self._fds, self._fds_truncated
        self._fds, self._fds_truncated = [], False
        try:
            if truncated or len(fds) > 1:
                raise p.ProtocolError(f'SHM_SETUP came with '
                                      f'{"more than " if truncated else ""}'
                                      f'{len(fds)} file descriptors, must '
                                      f'be exactly 1')
            if not fds:
                raise p.ProtocolError('SHM_SETUP came without a file '
                                      'descriptor (SCM_RIGHTS)')
            size = setup.slots * setup.slot_size
            st = os.fstat(fds[0])
            if not stat.S_ISREG(st.st_mode):
                raise p.ProtocolError('the file descriptor of SHM_SETUP is '
                                      'not a memfd or regular file')
            if st.st_size < size:
                raise p.ProtocolError(f'the shared memory of SHM_SETUP is '
                                      f'{st.st_size} bytes, less than '
                                      f'{setup.slots} slots of '
                                      f'{setup.slot_size}')
            try:
                self.shm = mmap.mmap(fds[0], size, mmap.MAP_SHARED,
                                     mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as e:
                raise p.ProtocolError(f'cannot map the shared memory of '
                                      f'SHM_SETUP: {e}') from None
        finally:
            for fd in fds:
                os.close(fd)
        return self.shm

    def _handshake(self) -> list[p.Message] | None:
        """HELLO, HELLO_REPLY and, with SHM, SHM_SETUP.  Returns the
        messages that came right after it, or None if it failed."""
        self.sock.settimeout(self.handshake_timeout)
        waiting_for = 'HELLO'
        try:
            msgs: list[p.Message] = []
            while self.decoder.hello is None:
                got = self._receive()
                if got is None:
                    log.info('client closed the connection before HELLO')
                    return None
                msgs += got
            hello = msgs[0]
            if not self.unix:
                hello = dataclasses.replace(
                    hello, features=hello.features & ~p.F_SHM)
            reply = self.device.negotiate(hello)
            self.device.connection = self
            self._send(reply)
            waiting_for = 'SHM_SETUP'
            msgs = []
            while not self.decoder.complete and not self.closed:
                got = self._receive()
                if got is None:
                    log.info('client closed the connection before '
                             'SHM_SETUP')
                    return None
                msgs += got
            if self.closed:
                return None     # sending HELLO_REPLY failed (logged)
            self.sock.settimeout(None)
        except p.ProtocolError as e:
            log.error('protocol error: %s; dropping the connection', e)
            return None
        except socket.timeout:
            log.error('no %s within %g s; dropping the connection',
                      waiting_for, self.handshake_timeout)
            return None
        except DeviceError as e:
            log.error('cannot serve this client: %s', e.strerror)
            return None
        except OSError as e:
            log.error('handshake failed: %s', e)
            return None
        d = self.device
        shm = ''
        if self.decoder.shm_setup is not None:
            shm = (f', shared memory {self.decoder.shm_setup.slots} slots '
                   f'of {self.decoder.shm_setup.slot_size} bytes')
        log.info('handshake done: size %d, node below %s, features %#x, '
                 'max_data %d, max_inflight %d%s', d.size,
                 d.lower_size if d.has_lower else 'none', d.features,
                 d.max_data, d.max_inflight, shm)
        return [m for m in msgs if not isinstance(m, p.ShmSetup)]

    def _read_loop(self):
        try:
            while True:
                msgs = self._receive()
                if msgs is None:
                    if self.decoder.pending:
                        log.error('protocol error: the client closed the '
                                  'connection inside a message (%d bytes '
                                  'of it came)', self.decoder.pending)
                    else:
                        log.info('client disconnected')
                    break
                self._dispatch(msgs)
        except p.ProtocolError as e:
            log.error('protocol error: %s; dropping the connection', e)
        except OSError as e:
            if not self.closed:
                log.info('connection error: %s', e)
        finally:
            self.close()
            self._queue.put(None)

    def _dispatch(self, msgs: list[p.Message]):
        for msg in msgs:
            if isinstance(msg, p.LowerReply):
                self._lower_done(msg)
            else:
                self._queue.put(msg)

    def _lower_done(self, reply: p.LowerReply):
        with self._state_lock:
            waiter = self._waiters.pop(reply.handle, None)
        if waiter is not None:
            waiter.reply = reply
            waiter.done.set()

    # -- handlers ---------------------------------------------------------

    def _serve_requests(self):
        workers = self.device.workers
        pool = ThreadPoolExecutor(workers, 'softdev-worker') \
            if workers > 1 else None
        try:
            while True:
                req = self._queue.get()
                if req is None or self.closed:
                    break       # unstarted requests: the client resends
                if pool:
                    pool.submit(self._serve_one, req)
                else:
                    self._serve_one(req, serial=True)
        finally:
            if pool:
                self.close()
                pool.shutdown(wait=True, cancel_futures=True)

    def _serve_one(self, req: p.Request, serial: bool = False):
        reply = self.device.handle(req)
        # One handler thread: hold the reply back while more requests are
        # waiting, so that their replies go out with it.
        flush = not serial or self._queue.empty() or \
            len(self._out) >= MAX_DEFERRED
        try:
            self._send(reply, flush)
        except p.ProtocolError as e:
            log.error('device bug: %s; completing %s with -EIO', e,
                      p.OP_NAMES[req.op])
            self._send(p.Reply(req.handle, result=-errno.EIO), flush)


def serve(device: BlockDevice, sock: socket.socket, **kwargs):
    """Serve one already connected socket (e.g. half of a socketpair)."""
    Connection(device, sock, **kwargs).run()


def listen_unix(path: str) -> socket.socket:
    """A listening unix socket at path, mode 0600.  A stale socket file
    there is replaced; a live one or any other file is an error."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except ConnectionRefusedError:
                    os.unlink(path)
                else:
                    raise OSError(errno.EADDRINUSE, 'a server is already '
                                  'listening there', path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(4)
    return sock


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free port, see address())."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def listen_vsock(cid: int, port: int) -> socket.socket:
    """A listening vsock socket (cid socket.VMADDR_CID_ANY: any)."""
    if not hasattr(socket, 'AF_VSOCK'):
        raise OSError(errno.EAFNOSUPPORT, 'this Python has no AF_VSOCK')
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.bind((cid, port))
        sock.listen(4)
    except OSError:
        sock.close()
        raise
    return sock


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                            struct.calcsize('3i'))
    return struct.unpack('3i', creds)


class Server:
    """Accepts connections on a listening socket and serves them one at a
    time.  stop() (from another thread or a signal handler) ends
    serve_forever(); close() also removes a unix socket file.
    allow_uids (unix sockets only): serve only clients running as one of
    these uids (SO_PEERCRED); others are logged and closed."""

    def __init__(self, device: BlockDevice, listener: socket.socket,
                 handshake_timeout: float = 10.0,
                 allow_uids: set[int] | None = None):
        self.device = device
        self.listener = listener
        self.handshake_timeout = handshake_timeout
        self.connection: Connection | None = None
        self._stopping = False
        addr = listener.getsockname()
        self._path = addr if listener.family == socket.AF_UNIX else None
        if self._path is not None:
            self._address = f'unix:{addr}'
        elif listener.family in (socket.AF_INET, socket.AF_INET6):
            self._address = f'tcp:{addr[0]}:{addr[1]}'
        else:
            self._address = f'vsock:{addr[0]}:{addr[1]}'
        if allow_uids is not None and self._path is None:
            raise ValueError('allow_uids needs a unix socket')
        self.allow_uids = None if allow_uids is None else set(allow_uids)

    @classmethod
    def unix(cls, device, path, **kwargs):
        return cls._on(device, listen_unix(path), **kwargs)

    @classmethod
    def tcp(cls, device, host, port, **kwargs):
        return cls._on(device, listen_tcp(host, port), **kwargs)

    @classmethod
    def vsock(cls, device, cid, port, **kwargs):
        return cls._on(device, listen_vsock(cid, port), **kwargs)

    @classmethod
    def _on(cls, device, listener, **kwargs):
        try:
            return cls(device, listener, **kwargs)
        except Exception:
            if listener.family == socket.AF_UNIX:
                os.unlink(listener.getsockname())
            listener.close()
            raise

    def address(self) -> str:
        """'unix:PATH', 'tcp:HOST:PORT' or 'vsock:CID:PORT'."""
        return self._address

    def serve_forever(self):
        log.info('listening on %s', self.address())
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                if self._stopping:
                    return
                raise
            if not self._admit(sock):
                sock.close()
                continue
            self.connection = Connection(self.device, sock,
                                         self.handshake_timeout)
            try:
                self.connection.run()
            finally:
                self.connection = None

    def _admit(self, sock: socket.socket) -> bool:
        if self._path is None:
            log.info('client connected')
            return True
        pid, uid, _ = peer_credentials(sock)
        if self.allow_uids is not None and uid not in self.allow_uids:
            allowed = ','.join(map(str, sorted(self.allow_uids)))
            log.error('refusing a client with uid %d (pid %d): allowed '
                      'uids are %s; closing', uid, pid, allowed)
            return False
        log.info('client connected (pid %d, uid %d)', pid, uid)
        return True

    def stop(self):
        self._stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn = self.connection
        if conn is not None:
            conn.close()

    def close(self):
        self.stop()
        self.listener.close()
        if self._path:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
