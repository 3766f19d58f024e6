"""
Toy encryption (not secure): the node below holds every byte XORed with
--arg key=0x5a; reads undo it.  Shows lower_read() and lower_write().

SPDX-License-Identifier: GPL-2.0-or-later
"""

from softdev import BlockDevice


class Xor(BlockDevice):
    discard_passes = True       # discarded data is undefined anyway

    def __init__(self, key='0x5a', **kwargs):
        super().__init__(**kwargs)
        self.key = int(key, 0) & 0xff
        self.table = bytes(b ^ self.key for b in range(256))

    def read(self, offset, length):
        return self.lower_read(offset, length).translate(self.table)

    def write(self, offset, data, fua):
        self.lower_write(offset, data.translate(self.table), fua)

    def write_zeroes(self, offset, length, may_unmap):
        # Zeroes must read back as zeroes, so the node below gets key
        # bytes.
        pos = 0
        while pos < length:
            n = min(length - pos, 1 << 20)
            self.lower_write(offset + pos, bytes([self.key]) * n)
            pos += n
