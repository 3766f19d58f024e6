"""
Example soft devices, each a few lines: passthrough, ramdisk, xor,
latency and logger.  Run one with 'python3 -m softdev run
softdev.examples.ramdisk:RamDisk --unix /tmp/ram.sock --arg size=64M'.

SPDX-License-Identifier: GPL-2.0-or-later
"""
