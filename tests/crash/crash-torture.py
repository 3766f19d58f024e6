#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Crash torture of an image format that is a QEMU block driver.

Each trial serves the image from qemu-storage-daemon as a writable NBD
export, drives a random pipelined workload of writes, flushes, trims,
write-zeroes and reads through its own NBD client, kills the daemon with
SIGKILL at a random moment, runs "qemu-img check" (on even trials after
"check -r all") and reads the image back.  It passes when the checks find
no errors, reads returned what was last written, and each block holds the
content of the last operation on it acknowledged before the newest
acknowledged flush was issued, or of a later operation on it.  Written
blocks carry a header (magic, write id, block) and filler from the write
id, compressible text or, for a fifth of the writes, random bytes.  With
--dedup a share of the writes put one of a few contents on every block
they write instead, so that a deduplicating format stores shared data.
"""

import argparse
import hashlib
from json import dumps as json_dumps, loads as json_loads
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from functools import lru_cache

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import tt_points  # noqa: E402  (--timetravel)

BLOCK = 4096
MAX_BLOCKS = 64            # blocks per request
DEPTH = 8                  # requests in flight
HOT_BLOCKS = 512           # per-trial hot region, so blocks get overwritten
KILL_DELAY = (0.05, 1.5)   # seconds after the workload starts
SOCKET_TIMEOUT = 10
TOOL_TIMEOUT = 120

ZERO = 0                   # content id of a zero block; write ids start at 1
POOL = 8                   # --dedup: contents shared by blocks and writes
POOL_BASE = 1 << 62        # their content ids
ANY_BLOCK = (1 << 64) - 1  # their header's block
ZERO_BLOCK = bytes(BLOCK)
MAGIC = b'SDCRASH1'
HEADER = struct.Struct('<8sQQI')     # magic, write id, block, incompressible
FILL = BLOCK - HEADER.size
WORDS = ('block', 'cluster', 'sector', 'flush', 'journal', 'extent', 'crash',
         'torture', 'qemu', 'storage', 'daemon', 'image', 'format', 'write')

# NBD protocol: doc/proto.md in https://github.com/NetworkBlockDevice/nbd
NBD_MAGIC = 0x4e42444d41474943
NBD_IHAVEOPT = 0x49484156454f5054
NBD_OPT_REPLY_MAGIC = 0x3e889045565a9
NBD_REQUEST_MAGIC = 0x25609513
NBD_SIMPLE_REPLY_MAGIC = 0x67446698
NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES = 1 << 0, 1 << 1
NBD_OPT_GO, NBD_REP_ACK, NBD_REP_INFO, NBD_INFO_EXPORT = 7, 1, 3, 0
NBD_REP_FLAG_ERROR = 1 << 31
NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH = 1, 2, 4
NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES = 1 << 5, 1 << 6
CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES = 0, 1, 3, 4, 6
CMD_NAMES = {CMD_READ: 'read', CMD_WRITE: 'write', CMD_FLUSH: 'flush',
             CMD_TRIM: 'trim', CMD_WRITE_ZEROES: 'write-zeroes'}
# Request mix (percent), and the transmission flag each kind needs.
MIX = ((CMD_WRITE, 65, 0), (CMD_FLUSH, 10, NBD_FLAG_SEND_FLUSH),
       (CMD_TRIM, 10, NBD_FLAG_SEND_TRIM),
       (CMD_WRITE_ZEROES, 10, NBD_FLAG_SEND_WRITE_ZEROES), (CMD_READ, 5, 0))


class TrialError(Exception):
    pass


@lru_cache(maxsize=4096)
def filler(write_id):
    rng = random.Random(write_id)
    phrase = (' '.join(rng.sample(WORDS, 6)) + f' {write_id}\n').encode()
    return (phrase * (FILL // len(phrase) + 1))[:FILL]


def block_data(write_id, block, incompressible):
    head = HEADER.pack(MAGIC, write_id, block, incompressible)
    if incompressible:
        return head + hashlib.shake_128(head).digest(FILL)
    return head + filler(write_id)


def identify(data, block):
    """Return (content id, or None if no valid content here, description)."""
    if data == ZERO_BLOCK:
        return ZERO, 'zeroes'
    if len(data) == BLOCK:
        magic, wid, blk, incompressible = HEADER.unpack_from(data)
        if (magic == MAGIC and incompressible in (0, 1) and
                data == block_data(wid, blk, incompressible)):
            if blk == block:
                return wid, f'write {wid}'
            if blk == ANY_BLOCK and wid >= POOL_BASE:
                return wid, f'shared content {wid - POOL_BASE}'
            return None, f'write {wid} of block {blk}'
    return None, 'garbage ' + data[:24].hex()


def describe(contents):
    return ', '.join('zeroes' if c == ZERO else
                     f'shared content {c - POOL_BASE}' if c >= POOL_BASE else
                     f'write {c}' for c in sorted(contents))


class NBDClient:
    """Fixed newstyle NBD client, simple replies only."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(SOCKET_TIMEOUT)
        try:
            self.sock.connect(path)
            self.size, self.flags = self._go(b'disk')
        except BaseException:
            self.sock.close()
            raise

    def close(self):
        self.sock.close()

    def recv_exact(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError('NBD server closed the connection')
            buf += chunk
        return buf

    def _go(self, name):
        magic, opt_magic, hflags = struct.unpack('>QQH', self.recv_exact(18))
        if (magic, opt_magic) != (NBD_MAGIC, NBD_IHAVEOPT) or \
                not hflags & NBD_FLAG_FIXED_NEWSTYLE:
            raise TrialError('server does not speak fixed newstyle NBD')
        # NO_ZEROES if offered: no padding to skip after the export info.
        self.sock.sendall(struct.pack('>I', hflags & (NBD_FLAG_FIXED_NEWSTYLE |
                                                      NBD_FLAG_NO_ZEROES)))
        data = struct.pack('>I', len(name)) + name + struct.pack('>H', 0)
        self.sock.sendall(struct.pack('>QII', NBD_IHAVEOPT, NBD_OPT_GO,
                                      len(data)) + data)
        size = None
        while True:
            magic, opt, rtype, length = struct.unpack('>QIII',
                                                      self.recv_exact(20))
            payload = self.recv_exact(length)
            if magic != NBD_OPT_REPLY_MAGIC or opt != NBD_OPT_GO:
                raise TrialError('bad NBD option reply')
            if rtype & NBD_REP_FLAG_ERROR:
                raise TrialError(f'NBD_OPT_GO failed ({rtype:#x}): '
                                 f'{payload!r}')
            if rtype == NBD_REP_INFO and \
                    struct.unpack_from('>H', payload)[0] == NBD_INFO_EXPORT:
                size, flags = struct.unpack_from('>QH', payload, 2)
            elif rtype == NBD_REP_ACK:
                break
        if size is None:
            raise TrialError('NBD server sent no export info')
        return size, flags

    def send(self, handle, cmd, offset, length, data=b''):
        self.sock.sendall(struct.pack('>IHHQQI', NBD_REQUEST_MAGIC, 0, cmd,
                                      handle, offset, length) + data)

    def recv_reply(self):
        magic, error, handle = struct.unpack('>IIQ', self.recv_exact(16))
        if magic != NBD_SIMPLE_REPLY_MAGIC:
            raise TrialError(f'bad NBD reply magic {magic:#x}')
        return handle, error


class Op:
    def __init__(self, op_id, cmd, block, count, issued):
        self.id, self.cmd, self.block, self.count = op_id, cmd, block, count
        self.incompressible = False
        self.pool = None           # --dedup: the shared content it writes
        self.issued, self.acked = issued, None

    def content(self):
        if self.cmd != CMD_WRITE:
            return ZERO
        return self.id if self.pool is None else POOL_BASE + self.pool

    def data(self, block):
        if self.pool is None:
            return block_data(self.id, block, self.incompressible)
        return block_data(self.content(), ANY_BLOCK, self.incompressible)


class QmpRepeater(threading.Thread):
    """A QMP command on the node again and again at random intervals,
    while the workload runs and until the kill: softdev-compact
    (--compact), softdev-timetravel-mark (--timetravel; each mark is
    recorded with the logical clock at its issue and acknowledgement)."""

    def __init__(self, path, rng, command, trial=None):
        super().__init__(daemon=True)
        self.path, self.command, self.trial = path, command, trial
        self.errors, self.done, self.marks = [], 0, []
        self.pauses = [rng.uniform(0.01, 0.15) for _ in range(1000)]
        self.start()

    def args(self):
        if self.command == 'softdev-timetravel-mark':
            return {'node-name': 'fmt',
                    'name': f'{self.trial.next_id}-{self.done}'}
        return {'node-name': 'fmt'}

    def run(self):
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(SOCKET_TIMEOUT)
            sock.connect(self.path)
            f = sock.makefile('rw')
            f.readline()                    # the greeting
            for cmd in ['qmp_capabilities'] + [self.command] * 1000:
                args = {}
                if cmd != 'qmp_capabilities':
                    time.sleep(self.pauses[self.done % 1000])
                    args = self.args()
                    issued = self.trial.tick() if self.trial else None
                f.write(json_dumps({'execute': cmd, 'arguments': args}) +
                        '\n')
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        return              # the kill
                    reply = json_loads(line)
                    if 'event' not in reply:
                        break
                if 'error' in reply:
                    self.errors.append(f'{cmd}: {reply["error"]}')
                    return
                if cmd != 'qmp_capabilities' and self.trial:
                    self.marks.append((args['name'], issued,
                                       self.trial.tick(),
                                       reply['return']['time']))
                self.done += cmd != 'qmp_capabilities'
        except (OSError, ValueError):
            return                          # the kill

    def finish(self):
        self.join(timeout=SOCKET_TIMEOUT)
        return self.errors


class Trial:
    """One workload against a live daemon, and the model of what it did.

    Times come from a logical clock ticked at every issue and every
    acknowledgement, so they order events exactly as the client saw them.
    No request overlaps one in flight, so the operations on a block are
    issued, and acknowledged, one after the other."""

    def __init__(self, args, rng, known, next_id, kinds):
        self.args, self.rng, self.known = args, rng, known
        self.next_id = next_id
        self.nblocks = len(known)
        self.kinds, self.weights = zip(*kinds)
        self.hot = rng.randrange(self.nblocks - HOT_BLOCKS + 1)
        self.clock = 0
        self.clock_lock = threading.Lock()
        self.ops = []
        self.per_block = {}        # block -> [Op] that change it, in order
        self.busy = bytearray(self.nblocks)
        self.read_errors = []
        self.compactions = None      # --compact: how many completed
        self.marks = []              # --timetravel: (name, issued, acked,
                                     # its time)
        self.marks_checked = 0

    def tick(self):
        with self.clock_lock:     # the marks' thread ticks it too
            self.clock += 1
            return self.clock

    def choose(self):
        cmd = self.rng.choices(self.kinds, self.weights)[0]
        if cmd == CMD_FLUSH:
            return cmd, 0, 0
        for _ in range(8):
            count = self.rng.randint(1, MAX_BLOCKS)
            if self.rng.random() < 0.5:
                start = self.hot + self.rng.randrange(HOT_BLOCKS - count + 1)
            else:
                start = self.rng.randrange(self.nblocks - count + 1)
            if self.busy.find(1, start, start + count) < 0:
                return cmd, start, count
        return None

    def issue(self, client):
        req = self.choose()
        if req is None:
            return None
        cmd, start, count = req
        op = Op(self.next_id, cmd, start, count, self.tick())
        self.next_id += 1
        self.ops.append(op)
        self.busy[start:start + count] = b'\1' * count
        if cmd not in (CMD_FLUSH, CMD_READ):
            for b in range(start, start + count):
                self.per_block.setdefault(b, []).append(op)
        data = b''
        if cmd == CMD_WRITE:
            op.incompressible = self.rng.random() < 0.2
            if self.rng.random() < self.args.dedup:
                op.pool = self.rng.randrange(POOL)
                op.incompressible = op.pool % 4 == 0
            data = b''.join(op.data(b) for b in range(start, start + count))
        client.send(op.id, cmd, start * BLOCK, count * BLOCK, data)
        return op

    def receive(self, client, inflight):
        handle, error = client.recv_reply()
        op = inflight.pop(handle, None)
        if op is None:
            raise TrialError(f'NBD reply for unknown handle {handle}')
        if error:
            raise TrialError(f'{CMD_NAMES[op.cmd]} {op.id} of blocks '
                             f'{op.block}+{op.count} failed: error {error}')
        data = client.recv_exact(op.count * BLOCK) \
            if op.cmd == CMD_READ else None
        op.acked = self.tick()
        self.busy[op.block:op.block + op.count] = bytes(op.count)
        if data is not None:
            self.check_read(op, data)

    def run(self, client, daemon, delay):
        """Run the workload until the daemon is killed after delay s."""
        killed = threading.Event()

        def kill():
            killed.set()
            daemon.send_signal(signal.SIGKILL)

        timer = threading.Timer(delay, kill)
        inflight = {}
        timer.start()
        try:
            while not killed.is_set():
                while len(inflight) < DEPTH and not killed.is_set():
                    op = self.issue(client)
                    if op is None:
                        break
                    inflight[op.id] = op
                self.receive(client, inflight)
        except OSError as e:
            # Expected once the daemon is dead, a failure before.
            if not killed.is_set():
                raise TrialError(f'NBD connection failed before the kill: '
                                 f'{e}') from e
        finally:
            timer.cancel()
            timer.join()

    def contents(self, b, i):
        """Contents the i-th operation on block b may leave there."""
        ops = self.per_block[b]
        if ops[i].cmd == CMD_TRIM and self.args.trim_may_keep:
            return {ZERO, self.known[b]} | {o.content() for o in ops[:i]}
        return {ops[i].content()}

    def latest(self, b):
        ops = self.per_block.get(b)
        return self.contents(b, len(ops) - 1) if ops else {self.known[b]}

    def check_read(self, op, data):
        # Nothing on these blocks was in flight during the read, so it
        # must see what the latest operation on each block left there.
        for b in range(op.block, op.block + op.count):
            k = (b - op.block) * BLOCK
            found, what = identify(data[k:k + BLOCK], b)
            if found not in self.latest(b):
                self.read_errors.append(
                    f'read {op.id}: block {b}: expected '
                    f'{describe(self.latest(b))}, found {what}')

    def flushed_clock(self):
        """Issue time of the newest acknowledged flush, -1 if none."""
        return max((op.issued for op in self.ops
                    if op.cmd == CMD_FLUSH and op.acked is not None),
                   default=-1)

    def last_flushed(self, b, flushed):
        """Index of the last op on b acked before flushed, None if none."""
        last = None
        for i, op in enumerate(self.per_block.get(b, ())):
            if op.acked is not None and op.acked < flushed:
                last = i
        return last

    def candidates(self, b, flushed):
        last = self.last_flushed(b, flushed)
        result = {self.known[b]} if last is None else set()
        for i in range(last or 0, len(self.per_block.get(b, ()))):
            result |= self.contents(b, i)
        return result

    def candidates_at(self, b, issued, acked):
        """Contents block b may hold at a point made between the clocks
        issued and acked: the last op on it acknowledged before the point
        was asked for, or one issued before it was there."""
        ops = self.per_block.get(b, ())
        last = self.last_flushed(b, issued)
        result = {self.known[b]} if last is None else set()
        for i in range(last or 0, len(ops)):
            if ops[i].issued < acked:
                result |= self.contents(b, i)
        return result

    def lose_flushed_write(self, path, flushed):
        """--self-test-lose: put older content over a flushed write."""
        with open(path, 'r+b') as f:
            for b, ops in self.per_block.items():
                last = self.last_flushed(b, flushed)
                if last is None or ops[last].cmd != CMD_WRITE:
                    continue
                f.seek(b * BLOCK)
                if identify(f.read(BLOCK), b)[0] != ops[last].content():
                    continue
                allowed = self.candidates(b, flushed)
                older = ops[last - 1] if last else None
                if older and older.content() not in allowed:
                    data = older.data(b) if older.cmd == CMD_WRITE \
                        else ZERO_BLOCK
                elif ZERO not in allowed:
                    data = ZERO_BLOCK
                else:
                    continue
                f.seek(b * BLOCK)
                f.write(data)
                print(f'  self-test: block {b}: flushed write {ops[last].id} '
                      f'replaced by {identify(data, b)[1]}')
                return

    def verify(self, path, flushed):
        """Check each block of the raw image at path against the model;
        return the lost flushed writes and how many changed blocks hold
        their latest content.  What was found becomes the known content."""
        lost = []
        at_latest = 0
        with open(path, 'rb') as f:
            for b in range(self.nblocks):
                found, what = identify(f.read(BLOCK), b)
                expected = self.candidates(b, flushed)
                if found not in expected:
                    lost.append(f'block {b} (offset {b * BLOCK:#x}): '
                                f'expected {describe(expected)}, found {what}')
                elif b in self.per_block:
                    at_latest += found in self.latest(b)
                self.known[b] = found
        return lost, at_latest


def run_tool(args, argv):
    if args.verbose:
        print('  $ ' + ' '.join(argv))
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True,
                       timeout=TOOL_TIMEOUT)
    if args.verbose and r.stdout.strip():
        print('    ' + r.stdout.strip().replace('\n', '\n    '))
    return r


def read_log(path):
    with open(path, errors='replace') as f:
        return f.read()


def start_daemon(args, image, sock, log_path):
    """Start qemu-storage-daemon and return it with an NBD client on it."""
    # discard=unmap on both nodes: -blockdev ignores discards by default,
    # so a trim would not zero anything.
    argv = [os.path.join(args.qemu_build, 'storage-daemon',
                         'qemu-storage-daemon'),
            '--blockdev', 'driver=file,node-name=f,cache.direct=off,'
            'discard=unmap,filename=' + image.replace(',', ',,')]
    if args.timetravel:
        argv += ['--blockdev', 'driver=file,node-name=j,filename=' +
                 (image + '.journal').replace(',', ',,'),
                 '--blockdev', 'driver=softdev-timetravel,node-name=fmt,'
                 'file=f,journal=j,discard=unmap']
    else:
        argv += ['--blockdev', f'driver={args.format},node-name=fmt,file=f,'
                 'discard=unmap']
    argv += ['--nbd-server', 'addr.type=unix,addr.path=' +
             sock.replace(',', ',,'),
             '--export', 'type=nbd,id=e,node-name=fmt,name=disk,writable=on']
    if args.compact or args.timetravel:
        argv += ['--chardev', 'socket,id=qmp,server=on,wait=off,path=' +
                 (sock + '.qmp').replace(',', ',,'),
                 '--monitor', 'chardev=qmp']
    if args.verbose:
        print('  $ ' + ' '.join(argv))
    if os.path.exists(sock):
        os.unlink(sock)
    with open(log_path, 'w') as log:
        daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SOCKET_TIMEOUT
    try:
        while True:
            if daemon.poll() is not None:
                raise TrialError(f'qemu-storage-daemon exited with '
                                 f'{daemon.returncode}:\n{read_log(log_path)}')
            try:
                # The socket file appears before the daemon listens on it.
                return daemon, NBDClient(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TrialError(f'no NBD server after {SOCKET_TIMEOUT} '
                                     f's:\n{read_log(log_path)}') from None
                time.sleep(0.01)
    except BaseException:
        daemon.kill()
        daemon.wait()
        raise


def image_args(args, image):
    """How the tools open the image"""
    if args.timetravel:
        return [tt_points.tt_json(image)]
    return ['-f', args.format, image]


def check_image(args, image, repair):
    """qemu-img check, after check -r all if repair; return the errors."""
    img = os.path.join(args.qemu_build, 'qemu-img')
    errors = []
    if repair:
        r = run_tool(args, [img, 'check', '-r', 'all'] +
                     image_args(args, image))
        if r.returncode != 0:
            errors.append(f'check -r all exited with {r.returncode}:\n'
                          f'{r.stdout}')
    r = run_tool(args, [img, 'check'] + image_args(args, image))
    if args.allow_leaks and r.returncode == 3 and not repair:
        return errors       # exit code 3: leaked clusters, nothing worse
    if r.returncode != 0 or 'No errors were found' not in r.stdout:
        errors.append(f'check exited with {r.returncode}:\n{r.stdout}')
    return errors


def crash(args, n, workdir, image, known, next_id):
    """Run trial n's workload up to the kill; return (Trial, kill delay)."""
    rng = random.Random(f'{args.seed}:{n}')
    delay = rng.uniform(*KILL_DELAY)
    log_path = os.path.join(workdir, 'daemon.log')
    daemon, client = start_daemon(args, image,
                                  os.path.join(workdir, 'nbd.sock'), log_path)
    try:
        flags = client.flags
        if not flags & NBD_FLAG_HAS_FLAGS or flags & NBD_FLAG_READ_ONLY:
            raise TrialError(f'export is not writable (flags {flags:#x})')
        if client.size != len(known) * BLOCK:
            raise TrialError(f'export size {client.size}, expected '
                             f'{len(known) * BLOCK}')
        trial = Trial(args, rng, known, next_id,
                      [(k, w) for k, w, need in MIX if flags & need == need])
        qmp = os.path.join(workdir, 'nbd.sock.qmp')
        compactor = QmpRepeater(qmp, rng, 'softdev-compact') \
            if args.compact else None
        marker = QmpRepeater(qmp, rng, 'softdev-timetravel-mark', trial) \
            if args.timetravel else None
        trial.run(client, daemon, delay)
        if compactor:
            trial.read_errors += compactor.finish()
            trial.compactions = compactor.done
        if marker:
            trial.read_errors += marker.finish()
            trial.marks = marker.marks
    except TrialError as e:
        try:
            status = f'exit status {daemon.wait(timeout=1)}'
        except subprocess.TimeoutExpired:
            status = 'still running'
        raise TrialError(f'{e}\nqemu-storage-daemon {status}, log:\n'
                         f'{read_log(log_path)}') from None
    finally:
        client.close()
        if daemon.poll() is None:
            daemon.kill()
        rc = daemon.wait(timeout=SOCKET_TIMEOUT)
    if rc != -signal.SIGKILL:
        raise TrialError(f'daemon exited with {rc} before the kill:\n'
                         f'{read_log(log_path)}')
    return trial, delay


def run_trial(args, n, workdir, image, known, next_id, totals):
    """Crash, check and verify once; return (passed, next write id)."""
    trial, delay = crash(args, n, workdir, image, known, next_id)
    repair = n % 2 == 0 and args.format != 'raw'
    errors = list(trial.read_errors)
    readback = image
    if args.timetravel:
        # A read-write open recovers the journal; the disk is the image
        r = run_tool(args, [os.path.join(args.qemu_build, 'qemu-io'), '-c',
                            'flush', tt_points.tt_json(image)])
        if r.returncode:
            errors.append(f'reopening after the crash failed: {r.stdout}')
        errors += check_image(args, image, False)
        errors += tt_points.check_marks(sys.modules[__name__], args,
                                        workdir, image, trial,
                                        trial.flushed_clock())
    elif args.format != 'raw':
        errors += check_image(args, image, repair)
        readback = os.path.join(workdir, 'readback.raw')
        r = run_tool(args, [os.path.join(args.qemu_build, 'qemu-img'),
                            'convert', '-f', args.format, '-O', 'raw', image,
                            readback])
        if r.returncode != 0:
            raise TrialError(f'qemu-img convert exited with {r.returncode}:'
                             f'\n{r.stdout}')
    flushed = trial.flushed_clock()
    if args.self_test_lose:
        trial.lose_flushed_write(readback, flushed)
    lost, at_latest = trial.verify(readback, flushed)

    acked = [op for op in trial.ops if op.acked is not None]
    flushes = sum(op.cmd == CMD_FLUSH for op in acked)
    totals['ops'] += len(trial.ops)
    totals['flushes'] += flushes
    totals['lost'] += len(lost)
    result = 'ok' if not (lost or errors) else \
        f'FAILED ({len(lost)} lost flushed writes, {len(errors)} other errors)'
    print(f'trial {n}/{args.trials}: {len(trial.ops)} ops issued / '
          f'{len(acked)} acked, {flushes} flushes acked, kill after '
          f'{delay:.3f} s{", check -r all" if repair else ""}: {result}',
          flush=True)
    if args.verbose:
        print('  acked: ' + ', '.join(
            f'{name} {sum(op.cmd == cmd for op in acked)}'
            for cmd, name in CMD_NAMES.items()) +
            f'; {at_latest} of {len(trial.per_block)} blocks written hold '
            f'their latest content' +
            (f'; {trial.compactions} compactions completed'
             if trial.compactions is not None else '') +
            (f'; {len(trial.marks)} marks, {trial.marks_checked} checked '
             f'through views' if args.timetravel else ''))
    for line in lost[:20] + errors:
        print('  ' + line.rstrip().replace('\n', '\n    '))
    if len(lost) > 20:
        print(f'  ... and {len(lost) - 20} more lost flushed writes')
    return not (lost or errors), trial.next_id


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    ap.add_argument('--qemu-build', required=True, metavar='DIR',
                    help="QEMU's build directory")
    ap.add_argument('--format', required=True, metavar='FMT')
    ap.add_argument('--create-opts', metavar='OPTS',
                    help='options for qemu-img create -o')
    ap.add_argument('--trials', type=int, default=50)
    ap.add_argument('--compact', action='store_true',
                    help='run softdev-compact over QMP again and again '
                         'during the workload')
    ap.add_argument('--dedup', type=float, default=0, metavar='SHARE',
                    help='share of the writes that put one of a few shared '
                         'contents on their blocks (default 0)')
    ap.add_argument('--timetravel', type=int, metavar='JOURNAL_BYTES',
                    help='serve a raw disk through softdev-timetravel with a '
                         'journal of this size, mark it again and again, '
                         'and check the marks through views after each '
                         'crash (--format raw)')
    ap.add_argument('--size', type=int, default=64 << 20, metavar='BYTES')
    ap.add_argument('--seed', type=int)
    ap.add_argument('--workdir', metavar='DIR',
                    help='make the scratch directory in DIR')
    ap.add_argument('--keep', action='store_true',
                    help='keep the scratch directory')
    ap.add_argument('--verbose', action='store_true')
    ap.add_argument('--trim-may-keep', action='store_true',
                    help='a trimmed block may keep any earlier content')
    ap.add_argument('--allow-leaks', action='store_true',
                    help='accept leaked clusters after a crash (qcow2)')
    ap.add_argument('--self-test-lose', action='store_true',
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.size % BLOCK or args.size < HOT_BLOCKS * BLOCK:
        ap.error(f'--size must be a multiple of {BLOCK}, at least '
                 f'{HOT_BLOCKS * BLOCK}')
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    print(f'crash-torture: {args.format}: seed {args.seed}', flush=True)

    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix='crash-torture-', dir=args.workdir)
    image = os.path.join(workdir, 'disk.img')
    argv = [os.path.join(args.qemu_build, 'qemu-img'), 'create', '-q',
            '-f', args.format]
    if args.create_opts:
        argv += ['-o', args.create_opts]
    r = run_tool(args, argv + [image, str(args.size)])
    ok = r.returncode == 0
    if ok and args.timetravel:
        r = run_tool(args, argv + [image + '.journal', str(args.timetravel)])
        ok = r.returncode == 0
    if not ok:
        print(f'crash-torture: qemu-img create failed:\n{r.stdout}')

    known = [ZERO] * (args.size // BLOCK)
    next_id = 1
    totals = {'ops': 0, 'flushes': 0, 'lost': 0}
    trials = 0
    while ok and trials < args.trials:
        trials += 1
        try:
            ok, next_id = run_trial(args, trials, workdir, image, known,
                                    next_id, totals)
        except (TrialError, subprocess.TimeoutExpired) as e:
            print(f'trial {trials}/{args.trials}: FAILED: {e}')
            ok = False
    print(f'crash-torture: {args.format}: {trials} trials, {totals["lost"]} '
          f'lost flushed writes, {totals["ops"]} ops, {totals["flushes"]} '
          f'flushes{"" if ok else ", FAILED"}')
    if ok and not args.keep:
        shutil.rmtree(workdir)
    else:
        print(f'crash-torture: workdir kept: {workdir}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
