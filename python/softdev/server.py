"""
Serves a BlockDevice over the tap protocol: Connection runs one accepted
socket (handshake, reader thread, handlers); Server listens on a unix or
TCP socket and serves one client at a time, so QEMU can reconnect.
The thread model is described in device.py.

SPDX-License-Identifier: GPL-2.0-or-later
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import queue
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

from . import protocol as p
from .device import BlockDevice, ConnectionLost, DeviceError

log = logging.getLogger('softdev')


class _Waiter:
    """A handler waiting for the LOWER_REPLY to one LOWER_REQUEST."""

    def __init__(self):
        self.done = threading.Event()
        self.reply: p.LowerReply | None = None     # None: connection lost


class Connection:
    """One client connection.  run() returns when the client has gone (or
    broke the protocol) and no handler of this connection is running."""

    def __init__(self, device: BlockDevice, sock: socket.socket,
                 handshake_timeout: float = 10.0):
        self.device = device
        self.sock = sock
        self.handshake_timeout = handshake_timeout
        self.decoder = p.Decoder(p.DEVICE)
        self.closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._handles = itertools.count(1)

    def run(self):
        try:
            if self._handshake():
                reader = threading.Thread(target=self._read_loop,
                                          name='softdev-reader', daemon=True)
                reader.start()
                self._serve_requests()
                self.close()
                reader.join()
        finally:
            self.close()
            self.sock.close()
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

    # -- internals --------------------------------------------------------

    def _send(self, msg):
        """Check, record and send msg; dropped if the connection is gone.
        ProtocolError means msg breaks the spec and was not sent."""
        with self._send_lock:
            if self.closed:
                if isinstance(msg, p.LowerRequest):
                    raise ConnectionLost()
                return
            wire = self.decoder.sending(msg)
            try:
                self.sock.sendall(wire)
            except OSError as e:
                log.info('send failed: %s', e)
                self.close()

    def _handshake(self) -> bool:
        self.sock.settimeout(self.handshake_timeout)
        try:
            hello = []
            while not hello:
                chunk = self.sock.recv(p.HANDSHAKE_MAX_LENGTH)
                if not chunk:
                    log.info('client closed the connection before HELLO')
                    return False
                hello = self.decoder.feed(chunk)
            reply = self.device.negotiate(hello[0])
            self.device.connection = self
            self._send(reply)
            self.sock.settimeout(None)
        except p.ProtocolError as e:
            log.error('protocol error: %s; dropping the connection', e)
            return False
        except socket.timeout:
            log.error('no HELLO within %g s; dropping the connection',
                      self.handshake_timeout)
            return False
        except DeviceError as e:
            log.error('cannot serve this client: %s', e.strerror)
            return False
        except OSError as e:
            log.error('handshake failed: %s', e)
            return False
        d = self.device
        log.info('handshake done: size %d, node below %d, features %#x, '
                 'max_data %d', d.size, d.lower_size, d.features, d.max_data)
        return True

    def _read_loop(self):
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    log.info('client disconnected')
                    break
                for msg in self.decoder.feed(chunk):
                    if isinstance(msg, p.LowerReply):
                        self._lower_done(msg)
                    else:
                        self._queue.put(msg)
        except p.ProtocolError as e:
            log.error('protocol error: %s; dropping the connection', e)
        except OSError as e:
            if not self.closed:
                log.info('connection error: %s', e)
        finally:
            self.close()
            self._queue.put(None)

    def _lower_done(self, reply: p.LowerReply):
        with self._state_lock:
            waiter = self._waiters.pop(reply.handle, None)
        if waiter is not None:
            waiter.reply = reply
            waiter.done.set()

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
                    self._serve_one(req)
        finally:
            if pool:
                self.close()
                pool.shutdown(wait=True, cancel_futures=True)

    def _serve_one(self, req: p.Request):
        reply = self.device.handle(req)
        try:
            self._send(reply)
        except p.ProtocolError as e:
            log.error('device bug: %s; completing %s with -EIO', e,
                      p.OP_NAMES[req.op])
            self._send(p.Reply(req.handle, result=-errno.EIO))


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


class Server:
    """Accepts connections on a listening socket and serves them one at a
    time.  stop() (from another thread or a signal handler) ends
    serve_forever(); close() also removes a unix socket file."""

    def __init__(self, device: BlockDevice, listener: socket.socket,
                 handshake_timeout: float = 10.0):
        self.device = device
        self.listener = listener
        self.handshake_timeout = handshake_timeout
        self.connection: Connection | None = None
        self._stopping = False
        addr = listener.getsockname()
        self._path = addr if listener.family == socket.AF_UNIX else None
        self._address = f'unix:{addr}' if self._path is not None else \
            f'tcp:{addr[0]}:{addr[1]}'

    @classmethod
    def unix(cls, device, path, **kwargs):
        return cls(device, listen_unix(path), **kwargs)

    @classmethod
    def tcp(cls, device, host, port, **kwargs):
        return cls(device, listen_tcp(host, port), **kwargs)

    def address(self) -> str:
        """'unix:PATH' or 'tcp:HOST:PORT'."""
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
            log.info('client connected')
            self.connection = Connection(self.device, sock,
                                         self.handshake_timeout)
            try:
                self.connection.run()
            finally:
                self.connection = None

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
