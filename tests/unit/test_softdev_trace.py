"""
Unit tests of the softdev-trace reader (scripts/softdev_trace.py): the
parser accepts well-formed traces, rejects malformed ones with TraceError,
and its CRC-32C matches the standard check value.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import io
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPTS = os.path.join(os.path.dirname(__file__), '..', '..', 'scripts')
sys.path.insert(0, SCRIPTS)

import softdev_trace as st  # noqa: E402


def header(version=1, hdr_size=80, rec_size=48, flags=st.HDR_HASH):
    return st.HEADER.pack(st.MAGIC, version, hdr_size, rec_size, flags,
                          1_700_000_000_000_000_000, 1000, b'node0', 0)


def record(time_ns=2000, offset=4096, length=512, latency=300, result=0,
           op=1, flags=st.REC_HASH, crc=0x1234):
    return st.RECORD.pack(time_ns, offset, length, latency, result, op,
                          flags, crc, 0)


class TraceReaderTest(unittest.TestCase):
    def test_roundtrip(self):
        data = header() + record() + record(op=4, offset=0, length=0,
                                            flags=0, result=-5)
        hdr, recs = st.read_trace(io.BytesIO(data))
        self.assertEqual(hdr.node_name, 'node0')
        self.assertEqual(hdr.start_monotonic_ns, 1000)
        self.assertEqual(len(recs), 2)
        self.assertEqual((recs[0].op, recs[0].offset, recs[0].length,
                          recs[0].crc32c, recs[0].hashed),
                         ('write', 4096, 512, 0x1234, True))
        self.assertEqual((recs[1].op, recs[1].result, recs[1].hashed),
                         ('flush', -5, False))

    def test_larger_sizes_are_skipped(self):
        # A future version may grow header and records: extra bytes are
        # skipped, known fields still read.
        data = (header(hdr_size=96, rec_size=64) + b'\0' * 16 +
                record() + b'\0' * 16)
        hdr, recs = st.read_trace(io.BytesIO(data))
        self.assertEqual([r.offset for r in recs], [4096])

    def test_malformed(self):
        cases = {
            'short header': header()[:40],
            'bad magic': b'XDTRACE\0' + header()[8:],
            'bad version': header(version=2),
            'small record size': header(rec_size=16),
            'bad op': header() + record(op=9),
        }
        for name, data in cases.items():
            with self.subTest(name):
                with self.assertRaises(st.TraceError):
                    st.read_trace(io.BytesIO(data))

    def test_partial_last_record(self):
        # A writer stopped mid-record: the complete records stand.
        data = header() + record(offset=0) + record(offset=512)[:20]
        hdr, recs = st.read_trace(io.BytesIO(data))
        self.assertTrue(hdr.truncated)
        self.assertEqual([r.offset for r in recs], [0])
        hdr, recs = st.read_trace(io.BytesIO(header() + record()))
        self.assertFalse(hdr.truncated)

    def test_crc32c_check_value(self):
        self.assertEqual(st.crc32c(b'123456789'), 0xE3069283)
        self.assertEqual(st.crc32c(b''), 0)
        # Chaining gives the same as one pass.
        self.assertEqual(st.crc32c(b'6789', st.crc32c(b'12345')),
                         0xE3069283)

    def test_summary(self):
        recs = [st.Record(0, 0, 512, lat, 0, 'read', 0, 0)
                for lat in range(1, 101)]
        s = st.summarise(recs)['read']
        self.assertEqual((s['ops'], s['bytes'], s['p50_ns'], s['p99_ns'],
                          s['max_ns']), (100, 51200, 50, 99, 100))

    def test_cli_errors_are_clear(self):
        with tempfile.NamedTemporaryFile(suffix='.sdtrace') as f:
            f.write(b'garbage')
            f.flush()
            p = subprocess.run([sys.executable,
                                os.path.join(SCRIPTS, 'softdev_trace.py'),
                                f.name], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn('file too short for a trace header', p.stderr)


if __name__ == '__main__':
    unittest.main()
