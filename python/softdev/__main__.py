"""
Command line: 'python3 -m softdev run MODULE:CLASS [--unix PATH | --tcp
HOST:PORT | --vsock CID:PORT] [--allow-uid UID[,UID...]] [--arg KEY=VALUE
...]' serves a BlockDevice subclass until interrupted.  MODULE is a
module name or a .py file.  To debug a device: 'python3 -m pdb -m softdev
run ...' (breakpoints work in handlers).

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import importlib
import importlib.util
import inspect
import logging
import os
import pwd
import signal
import socket
import sys
import traceback

from .device import BlockDevice
from .server import Server


def failure(what: str, verbose: bool) -> SystemExit:
    """Exit with what failed and the exception being handled: its
    traceback with -v, else its last line."""
    if verbose:
        traceback.print_exc()
    exc = traceback.format_exception_only(*sys.exc_info()[:2])
    return SystemExit(f'softdev: {what}:\n' +
                      '\n'.join('  ' + line for line in ''.join(exc)
                                .rstrip('\n').split('\n')) +
                      ('' if verbose else '\n(-v shows the traceback)'))


def load_class(target: str, verbose: bool = False) -> type:
    """The class named by 'package.module:Class' or 'path/file.py:Class'."""
    module_name, _, class_name = target.rpartition(':')
    if not module_name or not class_name:
        raise SystemExit(f'softdev: expected MODULE:CLASS or FILE.py:CLASS, '
                         f'not {target!r}')
    try:
        if module_name.endswith('.py'):
            if not os.path.isfile(module_name):
                raise SystemExit(f'softdev: no file {module_name}')
            name = os.path.splitext(os.path.basename(module_name))[0]
            spec = importlib.util.spec_from_file_location(name, module_name)
            if spec is None:
                raise SystemExit(f'softdev: cannot load {module_name}')
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except SystemExit:
        raise
    except BaseException:
        raise failure(f'cannot load {module_name}', verbose)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise SystemExit(f'softdev: {module_name} has no {class_name}')
    if not (isinstance(cls, type) and issubclass(cls, BlockDevice)):
        raise SystemExit(f'softdev: {target} is not a BlockDevice subclass')
    return cls


def device_args(cls: type) -> list[str]:
    """The keyword arguments cls() takes (through **kwargs, those of the
    classes it passes them to), or None if it takes any."""
    names = []
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())
        names += [p.name for p in params[1:]
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
        if klass is BlockDevice:
            return names
    return None


def make_device(cls: type, kwargs: dict, verbose: bool):
    accepted = device_args(cls)
    unknown = [k for k in kwargs if accepted is not None and k not in accepted]
    if unknown:
        raise SystemExit(f'softdev: {cls.__name__} takes no --arg '
                         f'{", ".join(unknown)} (it takes: '
                         f'{", ".join(accepted) or "none"})')
    given = ' '.join(f'--arg {k}={v}' for k, v in kwargs.items())
    try:
        return cls(**kwargs)
    except Exception:
        raise failure(f'cannot create {cls.__name__} with '
                      f'{given or "no --arg"}', verbose)


def parse_uids(text: str) -> set[int]:
    """'1000,qemu' -> {1000, uid of qemu}."""
    uids = set()
    for item in text.split(','):
        item = item.strip()
        try:
            uids.add(int(item) if item.isdigit() else pwd.getpwnam(item)[2])
        except KeyError:
            raise SystemExit(f'softdev: --allow-uid: no user {item!r}')
    return uids


def parse_vsock(text: str) -> tuple[int, int]:
    """'CID:PORT', CID a number or 'any'."""
    cid, sep, port = text.rpartition(':')
    try:
        if not sep:
            raise ValueError
        if cid.lower() in ('any', '-1'):
            return socket.VMADDR_CID_ANY, int(port)
        return int(cid, 0), int(port)
    except (ValueError, AttributeError):
        raise SystemExit(f'softdev: --vsock expects CID:PORT, not {text!r}')


def parse_args(argv):
    ap = argparse.ArgumentParser(prog='python3 -m softdev')
    sub = ap.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='serve a soft device',
                         description='Serve a BlockDevice subclass to '
                         'softdev-tap clients, one connection at a time.')
    run.add_argument('target', metavar='MODULE:CLASS')
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument('--unix', metavar='PATH',
                       help='listen on a unix socket (mode 0600; the '
                       'shared-memory data path works only here)')
    where.add_argument('--tcp', metavar='HOST:PORT',
                       help='listen on TCP (port 0: any free port)')
    where.add_argument('--vsock', metavar='CID:PORT',
                       help='listen on vsock (CID "any": every CID)')
    run.add_argument('--allow-uid', metavar='UID[,UID...]',
                     help='with --unix: serve only clients running as '
                     'these users (numbers or names); refuse others')
    run.add_argument('--arg', action='append', default=[],
                     metavar='KEY=VALUE',
                     help='keyword argument for the class (a string), '
                     'e.g. size=1G, max_inflight=16, shm=off')
    run.add_argument('--workers', type=int,
                     help='handler threads (default: the class attribute)')
    run.add_argument('--pdb', action='store_true',
                     help='enter pdb post-mortem when a handler raises')
    run.add_argument('-v', '--verbose', action='store_true',
                     help='debug logging')
    args = ap.parse_args(argv)
    if args.allow_uid is not None and not args.unix:
        ap.error('--allow-uid needs --unix')
    return args


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
    allow = parse_uids(args.allow_uid) if args.allow_uid else None
    device = make_device(load_class(args.target, args.verbose), kwargs,
                         args.verbose)
    device.post_mortem = args.pdb
    where = args.unix or args.tcp or args.vsock
    try:
        if args.unix:
            server = Server.unix(device, args.unix, allow_uids=allow)
        elif args.tcp:
            host, _, port = args.tcp.rpartition(':')
            server = Server.tcp(device, host.strip('[]') or 'localhost',
                                int(port))
        else:
            server = Server.vsock(device, *parse_vsock(args.vsock))
    except (OSError, ValueError) as e:
        raise SystemExit(f'softdev: cannot listen on {where}: '
                         f'{e.strerror or e if isinstance(e, OSError) else e}')
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == '__main__':
    main()
