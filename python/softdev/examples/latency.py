"""
Fault injection: every read and write is delayed by --arg delay_ms=10
before it is forwarded unchanged to the node below (write-zeroes as
writes of zeroes, like any data; discards pass undelayed).

SPDX-License-Identifier: GPL-2.0-or-later
"""

import time

from softdev import BlockDevice, Forward


class Latency(BlockDevice):
    workers = 8                 # overlapping requests wait side by side
    discard_passes = True       # undelayed, like flush and write-zeroes

    def __init__(self, delay_ms='10', **kwargs):
        super().__init__(**kwargs)
        self.delay = float(delay_ms) / 1000

    def read(self, offset, length):
        time.sleep(self.delay)
        return Forward()

    def write(self, offset, data, fua):
        time.sleep(self.delay)
        return Forward()
