"""
A new device with no node below: the data lives in a bytearray of
--arg size=64M bytes and is lost when the process ends.

SPDX-License-Identifier: GPL-2.0-or-later
"""

from softdev import BlockDevice


class RamDisk(BlockDevice):
    def __init__(self, size='64M', **kwargs):
        super().__init__(size=size, **kwargs)
        self.data = bytearray(self.size)

    def read(self, offset, length):
        return bytes(self.data[offset:offset + length])

    def write(self, offset, data, fua):
        self.data[offset:offset + len(data)] = data

    def flush(self):
        pass                    # nothing is more durable than RAM here

    def discard(self, offset, length):
        self.write_zeroes(offset, length, True)

    def write_zeroes(self, offset, length, may_unmap):
        self.data[offset:offset + length] = bytes(length)
