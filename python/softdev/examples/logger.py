"""
Tracing: appends one line per write (time, offset, length, FUA) to
--arg path=softdev-writes.log, then forwards the write unchanged.  A
write the client resends after a reconnect is logged again, marked
'replay' (self.request.replay): it may or may not have reached the disk
the first time.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import time

from softdev import BlockDevice, Forward


class Logger(BlockDevice):
    def __init__(self, path='softdev-writes.log', **kwargs):
        super().__init__(**kwargs)
        self.log = open(path, 'a', buffering=1)     # one line at a time

    def write(self, offset, data, fua):
        flags = ' fua' if fua else ''
        flags += ' replay' if self.request.replay else ''
        self.log.write(f'{time.time():.6f} write {offset} {len(data)}'
                       f'{flags}\n')
        return Forward()
