"""
Command line: 'python3 -m softdev run MODULE:CLASS [--unix PATH | --tcp
HOST:PORT] [--arg KEY=VALUE ...]' serves a BlockDevice subclass until
interrupted.  MODULE is a module name or a .py file.  To debug a device:
'python3 -m pdb -m softdev run ...' (breakpoints work in handlers).

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys

from .device import BlockDevice
from .server import Server


def load_class(target: str) -> type:
    """The class named by 'package.module:Class' or 'path/file.py:Class'."""
    module_name, _, class_name = target.rpartition(':')
    if not module_name or not class_name:
        raise SystemExit(f'softdev: expected MODULE:CLASS, not {target!r}')
    if module_name.endswith('.py'):
        name = os.path.splitext(os.path.basename(module_name))[0]
        spec = importlib.util.spec_from_file_location(name, module_name)
        if spec is None:
            raise SystemExit(f'softdev: cannot load {module_name}')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BlockDevice)):
        raise SystemExit(f'softdev: {target} is not a BlockDevice subclass')
    return cls


def parse_args(argv):
    ap = argparse.ArgumentParser(prog='python3 -m softdev')
    sub = ap.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='serve a soft device',
                         description='Serve a BlockDevice subclass to '
                         'softdev-tap clients, one connection at a time.')
    run.add_argument('target', metavar='MODULE:CLASS')
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument('--unix', metavar='PATH',
                       help='listen on a unix socket (mode 0600)')
    where.add_argument('--tcp', metavar='HOST:PORT',
                       help='listen on TCP (port 0: any free port)')
    run.add_argument('--arg', action='append', default=[],
                     metavar='KEY=VALUE',
                     help='keyword argument for the class (a string)')
    run.add_argument('--workers', type=int,
                     help='handler threads (default: the class attribute)')
    run.add_argument('--pdb', action='store_true',
                     help='enter pdb post-mortem when a handler raises')
    run.add_argument('-v', '--verbose', action='store_true',
                     help='debug logging')
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='softdev: %(levelname)s: %(message)s')
    kwargs = {}
    for item in args.arg:
        key, sep, value = item.partition('=')
        if not sep:
            raise SystemExit(f'softdev: --arg {item!r} is not KEY=VALUE')
        kwargs[key] = value
    if args.workers is not None:
        kwargs['workers'] = args.workers
    device = load_class(args.target)(**kwargs)
    device.post_mortem = args.pdb
    if args.unix:
        server = Server.unix(device, args.unix)
    else:
        host, _, port = args.tcp.rpartition(':')
        server = Server.tcp(device, host.strip('[]') or 'localhost',
                            int(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == '__main__':
    main()
