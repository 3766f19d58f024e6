"""
softdev: write soft devices for QEMU in Python.  A soft device is a
process that QEMU's softdev-tap driver connects to over the tap protocol
(docs/specs/softdev-tap.rst); subclass BlockDevice and serve it with
'python3 -m softdev run MODULE:CLASS --unix PATH'.

SPDX-License-Identifier: GPL-2.0-or-later
"""

from .device import (BlockDevice, ConnectionLost, DeviceError, Forward,
                     parse_bool, parse_size)
from .protocol import Decoder, ProtocolError
from .server import Connection, Server, serve

__all__ = ['BlockDevice', 'Connection', 'ConnectionLost', 'Decoder',
           'DeviceError', 'Forward', 'ProtocolError', 'Server',
           'parse_bool', 'parse_size', 'serve']
