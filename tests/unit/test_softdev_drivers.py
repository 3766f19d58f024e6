"""
Tests of scripts/softdev-drivers.py, which turns block/softdev/devices
(one source file per line) into QEMU's schema entries: run on a scratch
source tree with a small block-core.json holding the hook patch's
markers.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import subprocess
import sys
import tempfile
import unittest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
SCRIPT = os.path.join(SRC, 'scripts', 'softdev-drivers.py')

BLOCK_CORE = """\
##
# @BlockdevDriver:
#
# @raw: raw
#
# Features:
#
# @deprecated: nothing
##
{ 'enum': 'BlockdevDriver',
  'data': [ 'raw',
            # softdev: the BlockdevDriver members of the soft devices
            'ssh' ] }

{ 'union': 'BlockdevOptions',
  'data': {
      'raw': 'BlockdevOptionsRaw',
      # softdev: the BlockdevOptions branches of the soft devices
      'ssh': 'BlockdevOptionsSsh' } }
"""

BLOCKER = """\
/* QAPI: the options
 *
 * ##
 * # @SoftdevBlockerOptions:
 * #
 * # @start: first byte
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevBlockerOptions',
 *   'data': { '*start': 'uint64' } }
 */
static QemuOptsList opts = { .name = "softdev-blocker" };
static SoftdevDriver d = {
    .name = "softdev-blocker",
};
"""

RAMDISK = """\
static SoftdevDriver d = {
    .name           = "softdev-ram-disk",
    .lower_optional = true,
};
"""


class DriversTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.src = os.path.join(self.tmp.name, 'src')
        self.qemu = os.path.join(self.tmp.name, 'qemu')
        os.makedirs(os.path.join(self.src, 'block', 'softdev'))
        os.makedirs(os.path.join(self.src, 'qapi'))
        os.makedirs(os.path.join(self.qemu, 'qapi'))
        self.orig = os.path.join(self.tmp.name, 'block-core.json.orig')
        with open(self.orig, 'w') as f:
            f.write(BLOCK_CORE)
        self.write('block/softdev/blocker.c', BLOCKER)
        self.write('block/softdev/ramdisk.c', RAMDISK)
        self.write('qapi/softdev-types.json',
                   "{ 'struct': 'SoftdevRamDiskOptions', 'data': {} }\n")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, path, text):
        with open(os.path.join(self.src, path), 'w') as f:
            f.write(text)

    def run_script(self, devices):
        self.write('block/softdev/devices', devices)
        return subprocess.run([sys.executable, SCRIPT, self.src, self.qemu,
                               self.orig], capture_output=True, text=True)

    def block_core(self):
        with open(os.path.join(self.qemu, 'qapi', 'block-core.json')) as f:
            return f.read()

    def test_entries(self):
        r = self.run_script('# comment\nblocker.c\n\nramdisk.c  # a RAM disk\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('softdev-blocker, softdev-ram-disk', r.stdout)
        out = self.block_core()
        self.assertIn("            # softdev: the BlockdevDriver members of "
                      "the soft devices\n            'softdev-blocker',\n"
                      "            'softdev-ram-disk',\n            'ssh'",
                      out)
        self.assertIn("      'softdev-blocker': 'BlockdevOptionsSoftdevBlocker"
                      "',\n      'softdev-ram-disk': 'BlockdevOptionsSoftdev"
                      "RamDisk',\n", out)
        self.assertIn('# @raw: raw\n#\n# @softdev-blocker: Since 10.0 '
                      '(softdev)\n#\n# @softdev-ram-disk: Since 10.0 '
                      '(softdev)\n#\n# Features:', out)
        # the file's schema, without the comment's " * "
        self.assertIn("# @start: first byte\n#\n# Since: 10.0 (softdev)\n##\n"
                      "{ 'struct': 'SoftdevBlockerOptions',\n"
                      "  'data': { '*start': 'uint64' } }\n", out)
        self.assertIn("{ 'struct': 'BlockdevOptionsSoftdevBlocker',\n"
                      "  'base': 'SoftdevBlockerOptions',\n"
                      "  'data': { 'file': 'BlockdevRef' } }", out)
        # options from qapi/*.json; the node below may be left out
        self.assertIn("{ 'struct': 'BlockdevOptionsSoftdevRamDisk',\n"
                      "  'base': 'SoftdevRamDiskOptions',\n"
                      "  'data': { '*file': 'BlockdevRef' } }", out)

    def test_idempotent(self):
        self.assertEqual(self.run_script('blocker.c\n').returncode, 0)
        first = self.block_core()
        r = self.run_script('blocker.c\n')
        self.assertEqual((r.returncode, r.stdout), (0, ''))  # nothing new
        self.assertEqual(self.block_core(), first)
        # taking the line out takes the driver out
        self.assertEqual(self.run_script('').returncode, 0)
        self.assertNotIn('softdev-blocker', self.block_core())

    def test_without_options(self):
        self.write('block/softdev/bare.c',
                   'static SoftdevDriver d = { .name = "softdev-bare" };\n')
        self.assertEqual(self.run_script('bare.c\n').returncode, 0)
        self.assertIn("{ 'struct': 'BlockdevOptionsSoftdevBare',\n"
                      "  'data': { 'file': 'BlockdevRef' } }",
                      self.block_core())

    def test_errors(self):
        self.write('block/softdev/nameless.c', 'int x;\n')
        self.write('block/softdev/two.c', '.name = "softdev-a"; '
                   '.name = "softdev-b";\n')
        self.write('block/softdev/badqapi.c', '/* QAPI\n{ oops }\n */\n'
                   '.name = "softdev-q";\n')
        for devices, msg in (
                ('missing.c\n', 'No such file or directory'),
                ('blocker\n', "not a C file name: 'blocker'"),
                ('nameless.c\n', 'needs one SoftdevDriver name '
                 '(.name = "softdev-..."), found none'),
                ('two.c\n', "found ['softdev-a', 'softdev-b']"),
                ('blocker.c\nblocker.c\n', 'softdev-blocker is listed twice'),
                ('badqapi.c\n', 'QAPI comment line without " * "')):
            with self.subTest(devices=devices):
                r = self.run_script(devices)
                self.assertEqual(r.returncode, 1)
                self.assertIn(msg, r.stderr)
                self.assertFalse(os.path.exists(os.path.join(
                    self.qemu, 'qapi', 'block-core.json')))

    def test_markers_needed(self):
        with open(self.orig, 'w') as f:
            f.write(BLOCK_CORE.replace('# softdev: the BlockdevOptions '
                                       'branches', '# gone'))
        r = self.run_script('blocker.c\n')
        self.assertEqual(r.returncode, 1)
        self.assertIn('lacks the marker', r.stderr)


if __name__ == '__main__':
    unittest.main()
