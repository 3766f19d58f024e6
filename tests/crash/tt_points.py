# SPDX-License-Identifier: GPL-2.0-or-later
"""
crash-torture.py --timetravel: after each crash, the points of
softdev-timetravel's history checked through views.  ``ct`` is the
crash-torture module (its model and tools).
"""

import os
import socket
import subprocess
import time
from json import dumps as json_dumps, loads as json_loads


def tt_json(image):
    return 'json:' + json_dumps({
        'driver': 'softdev-timetravel',
        'file': {'driver': 'file', 'filename': image},
        'journal': {'driver': 'file', 'filename': image + '.journal'}})


def check_marks(ct, args, workdir, image, trial, flushed):
    """--timetravel: every mark acknowledged before the newest flush must
    be there after the crash (or older than the oldest point, if retention
    dropped it), and a view at it must show the disk as it was then."""
    errors = []
    sock = os.path.join(workdir, 'views.sock')
    qmp_path = sock + '.qmp'
    argv = [os.path.join(args.qemu_build, 'storage-daemon',
                         'qemu-storage-daemon'),
            '--blockdev', 'driver=file,node-name=f,filename=' + image,
            '--blockdev', 'driver=file,node-name=j,filename=' + image +
            '.journal',
            '--blockdev', 'driver=softdev-timetravel,node-name=tt,file=f,'
            'journal=j',
            '--nbd-server', f'addr.type=unix,addr.path={sock}',
            '--chardev', f'socket,id=qmp,server=on,wait=off,path={qmp_path}',
            '--monitor', 'chardev=qmp']
    for p in (sock, qmp_path):
        if os.path.exists(p):
            os.unlink(p)
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        # The socket file appears before the daemon listens on it
        deadline = time.monotonic() + ct.SOCKET_TIMEOUT
        while True:
            qs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            qs.settimeout(ct.TOOL_TIMEOUT)
            try:
                qs.connect(qmp_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                qs.close()
                if daemon.poll() is not None or \
                        time.monotonic() > deadline:
                    raise ct.TrialError('qemu-storage-daemon for the views '
                                        'did not start') from None
                time.sleep(0.01)
        f = qs.makefile('rw')
        f.readline()

        def cmd(command, **a):
            f.write(json_dumps({'execute': command, 'arguments': a}) + '\n')
            f.flush()
            while True:
                r = json_loads(f.readline())
                if 'event' not in r:
                    return r
        cmd('qmp_capabilities')
        h = cmd('softdev-timetravel-list', **{'node-name': 'tt'})['return']
        listed = {m['name'] for m in h['marks']}
        trial.marks_checked = 0
        due = [m for m in trial.marks if m[2] < flushed]
        # The newest point is the disk: the journal knows all it holds
        points = [('now', None, None, None)] + due[-3:]
        for name, issued, acked, at in points:
            if name == 'now':
                point = {'time': -1}
            elif name not in listed and at <= h['oldest']['time']:
                continue        # retention dropped it
            elif name not in listed:
                errors.append(f'mark {name} (acknowledged before the last '
                              f'flush) lost; oldest point '
                              f'{h["oldest"]["seq"]}, dropped marks '
                              f'{h["dropped-marks"]}')
                continue
            else:
                point = {'mark': name}
            r = cmd('blockdev-add', driver='softdev-timetravel-view',
                    **{'node-name': 'v', 'timetravel': 'tt',
                       'read-only': True}, **point)
            if 'error' in r:
                errors.append(f'a view at {name}: {r["error"]["desc"]}')
                continue
            r = cmd('block-export-add', type='nbd', id='v',
                    **{'node-name': 'v', 'name': 'v'})
            out = os.path.join(workdir, 'view.raw')
            rt = ct.run_tool(args, [os.path.join(args.qemu_build, 'qemu-img'),
                                 'convert', '-O', 'raw',
                                 f'nbd+unix:///v?socket={sock}', out])
            if rt.returncode:
                errors.append(f'reading the view at {name}: {rt.stdout}')
            elif name == 'now':
                with open(out, 'rb') as v, open(image, 'rb') as d:
                    if v.read() != d.read():
                        errors.append('the view of the newest point is not '
                                      'the disk')
            else:
                with open(out, 'rb') as v:
                    for b in range(trial.nblocks):
                        found, what = ct.identify(v.read(ct.BLOCK), b)
                        want = trial.candidates_at(b, issued, acked)
                        if found not in want:
                            errors.append(f'mark {name}: block {b}: '
                                          f'expected {ct.describe(want)}, '
                                          f'found {what}')
                            break
            trial.marks_checked += 1
            cmd('block-export-del', id='v', mode='hard')
            for _ in range(100):
                if not cmd('query-block-exports')['return']:
                    break
                time.sleep(0.01)
            cmd('blockdev-del', **{'node-name': 'v'})
        cmd('quit')
        daemon.wait(timeout=ct.TOOL_TIMEOUT)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    return errors
