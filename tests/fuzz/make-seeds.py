#!/usr/bin/python3
"""
make-seeds.py OUTDIR < (tap-vectors emit): write seed corpora for the
fuzz targets from the canonical messages of tests/unit/tap-vectors.c:
OUTDIR/device (inputs of fuzz-device: an option byte and a client's
stream) and OUTDIR/client (inputs of fuzz-client: an option byte and a
device's stream).

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import struct
import sys


def with_handle(msg, handle):
    return msg[:8] + struct.pack('<Q', handle) + msg[16:]


def with_features(msg, features):
    # HELLO / HELLO_REPLY: features at offset 8 of the payload
    return msg[:32] + struct.pack('<Q', features) + msg[40:]


def with_slot_size(msg, slot_size):
    # SHM_SETUP: slot_size at offset 4 of the payload
    return msg[:28] + struct.pack('<I', slot_size) + msg[32:]


def with_ring_entries(msg, entries):
    # SHM_SETUP: ring_entries at offset 8 of the payload
    return msg[:32] + struct.pack('<I', entries) + msg[36:]


def main():
    out = sys.argv[1]
    v = {}
    for line in sys.stdin:
        name, hexdata = line.split()
        v[name] = bytes.fromhex(hexdata)

    # fuzz-device options: 1 parallel, 2 memfd, 4 lower device, 8 own size,
    # 16 rings (offering FLUSH, DISCARD, ZEROES, FUA, LOWER and maybe SHM
    # and RING); ring records: a control byte (0x80: KICK after it) and a
    # 48-byte entry
    hello_inline = with_features(v['hello'], 0x1f)
    hello_shm = with_features(v['hello'], 0x3f)
    inline = hello_inline + v['request_write'] + v['request_read']
    shm = (hello_shm + v['shm_setup'] + v['request_write_shm'] +
           v['request_read_shm'])
    # the lower device's max_data is 64 KiB: so is its slot size
    shm_64k = (hello_shm + with_slot_size(v['shm_setup'], 65536) +
               v['request_write_shm'] + v['request_read_shm'])
    device = {
        'inline': b'\0' + inline,
        'inline-parallel': b'\1' + inline,
        'shm': b'\2' + shm,
        'shm-parallel': b'\3' + shm,
        'lower': b'\4' + inline,
        'lower-shm': b'\6' + shm_64k,
        'lower-parallel-shm': b'\7' + shm_64k,
        'own-size': b'\x08' + inline,
        'replay': b'\0' + hello_inline + v['request_write_replay'],
        'no-lower': b'\x08' + with_features(v['hello'], 1) +
                    v['request_read'],
        'bad-magic': b'\0' + hello_inline + b'\0' * 24,
        'ring': b'\x12' + with_features(v['hello'], 0x7f) +
                with_ring_entries(v['shm_setup'], 16) +
                b'\0' + v['request_write_shm'] +
                b'\x80' + v['request_read_shm'],
        'ring-parallel': b'\x13' + with_features(v['hello'], 0x7f) +
                         with_ring_entries(v['shm_setup'], 16) +
                         b'\x80' + v['request_read_shm'],
    }
    # fuzz-client options: 1 no node below, 2 offer SHM, max_data 64K << 4
    big = 4 << 2
    reply = v['hello_reply']
    client = {
        'shm': bytes([big | 2]) + reply +
               with_handle(v['reply_read_shm'], 100) +
               with_handle(v['reply_forward_write_shm'], 101) +
               v['lower_request_read'],
        'inline': bytes([big]) + with_features(reply, 0x11) +
                  with_handle(v['reply_read'], 100) +
                  with_handle(v['reply_forward_write'], 101) +
                  v['lower_request_read'],
        'no-lower': bytes([big | 1]) + with_features(reply, 0x01) +
                    with_handle(v['reply_read'], 100) +
                    with_handle(v['reply_error'], 101),
        'default-inflight': bytes([big | 2]) + v['hello_reply_default'],
    }
    for sub, seeds in (('device', device), ('client', client)):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, sub, name), 'wb') as f:
                f.write(data)


if __name__ == '__main__':
    main()
