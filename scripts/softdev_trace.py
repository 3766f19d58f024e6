#!/usr/bin/env python3
"""
Read softdev-trace files (docs/specs/softdev-trace.rst): print every
record, or summarise a trace per operation.  Also importable: read_trace()
returns the header and the records, crc32c() computes the data hash the
trace records.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO, Dict, List, Tuple

MAGIC = b'SDTRACE\0'
HEADER = struct.Struct('<8sIIIIQQ32sQ')
RECORD = struct.Struct('<QQQQiHHII')
OPS = ('read', 'write', 'write-zeroes', 'discard', 'flush')
HDR_HASH = 1
REC_HASH, REC_FUA, REC_UNMAP = 1, 2, 4


class TraceError(Exception):
    """The file is not a valid softdev trace."""


@dataclass
class Header:
    version: int
    flags: int
    start_realtime_ns: int
    start_monotonic_ns: int
    node_name: str
    # The file ends in a partial record (the writer stopped mid-write,
    # for example when the disk filled up); the records before it stand.
    truncated: bool = False


@dataclass
class Record:
    time_ns: int
    offset: int
    length: int
    latency_ns: int
    result: int
    op: str
    flags: int
    crc32c: int

    @property
    def hashed(self) -> bool:
        return bool(self.flags & REC_HASH)


def read_trace(f: BinaryIO) -> Tuple[Header, List[Record]]:
    """Parse a whole trace; raise TraceError on anything malformed.  A
    partial record at the end is dropped and flagged in the header."""
    raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise TraceError('file too short for a trace header')
    (magic, version, hdr_size, rec_size, flags, rt, mono, node,
     _reserved) = HEADER.unpack(raw)
    if magic != MAGIC:
        raise TraceError('not a softdev trace (bad magic)')
    if version != 1:
        raise TraceError(f'unsupported trace version {version}')
    if hdr_size < HEADER.size or rec_size < RECORD.size:
        raise TraceError(f'bad sizes: header {hdr_size}, record {rec_size}')
    f.read(hdr_size - HEADER.size)
    header = Header(version, flags, rt, mono,
                    node.split(b'\0', 1)[0].decode('utf-8', 'replace'))
    records = []
    while True:
        raw = f.read(rec_size)
        if not raw:
            break
        if len(raw) < rec_size:
            header.truncated = True
            break
        (time_ns, offset, length, latency, result, op, rflags, crc,
         _res) = RECORD.unpack(raw[:RECORD.size])
        if op >= len(OPS):
            raise TraceError(f'record {len(records)}: bad op {op}')
        records.append(Record(time_ns, offset, length, latency, result,
                              OPS[op], rflags, crc))
    return header, records


def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as recorded with hash=on."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def percentile(values: List[int], pct: int) -> int:
    if not values:
        return 0
    values = sorted(values)
    rank = max(1, -(-len(values) * pct // 100))
    return values[rank - 1]


def format_record(r: Record, start_ns: int) -> str:
    res = 'ok' if r.result == 0 else f'err{r.result}'
    crc = f' crc32c={r.crc32c:08x}' if r.hashed else ''
    fl = ''.join(n for bit, n in ((REC_FUA, ' fua'), (REC_UNMAP, ' unmap'))
                 if r.flags & bit)
    return (f'{(r.time_ns - start_ns) / 1e9:12.6f} {r.op:<12} '
            f'offset={r.offset} length={r.length} '
            f'latency={r.latency_ns / 1000:.1f}us {res}{crc}{fl}')


def summarise(records: List[Record]) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for op in OPS:
        rs = [r for r in records if r.op == op]
        if not rs:
            continue
        lat = [r.latency_ns for r in rs]
        out[op] = {
            'ops': len(rs),
            'bytes': sum(r.length for r in rs),
            'errors': sum(1 for r in rs if r.result < 0),
            'p50_ns': percentile(lat, 50),
            'p99_ns': percentile(lat, 99),
            'max_ns': max(lat),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description='Print or summarise a softdev-trace file.')
    ap.add_argument('trace', help='trace file written by softdev-trace')
    ap.add_argument('-s', '--summary', action='store_true',
                    help='print per-operation totals and latency '
                         'percentiles instead of every record')
    args = ap.parse_args()
    try:
        with open(args.trace, 'rb') as f:
            header, records = read_trace(f)
    except (OSError, TraceError) as e:
        print(f'softdev-trace-dump: {args.trace}: {e}', file=sys.stderr)
        return 1
    print(f'# node {header.node_name}, {len(records)} records, '
          f'hashes {"on" if header.flags & HDR_HASH else "off"}')
    if header.truncated:
        print(f'softdev-trace-dump: {args.trace}: ends in a partial record',
              file=sys.stderr)
    if args.summary:
        # Records are in completion order: use the earliest start and the
        # latest completion.
        span = (max(r.time_ns + r.latency_ns for r in records) -
                min(r.time_ns for r in records)) if records else 0
        print(f'# span {span / 1e9:.3f} s')
        print(f'{"op":<12} {"ops":>8} {"bytes":>14} {"errors":>6} '
              f'{"p50_us":>9} {"p99_us":>9} {"max_us":>9}')
        for op, s in summarise(records).items():
            print(f'{op:<12} {s["ops"]:>8} {s["bytes"]:>14} '
                  f'{s["errors"]:>6} {s["p50_ns"] / 1000:>9.1f} '
                  f'{s["p99_ns"] / 1000:>9.1f} {s["max_ns"] / 1000:>9.1f}')
    else:
        for r in records:
            print(format_record(r, header.start_monotonic_ns))
    return 0


if __name__ == '__main__':
    sys.exit(main())
