"""
docs/xen.rst shows the xl domain configs the Xen tests use: every block
after a ".. tested-config: SCRIPT" comment must be exactly what
"SCRIPT --print-config" prints, so the documented configs are the tested
ones.  Also checks xenbed's xl.cfg quoting, which those configs rely on.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import re
import subprocess
import sys
import unittest

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
DOC = os.path.join(TOP, 'docs', 'xen.rst')
sys.path.insert(0, os.path.join(TOP, 'tests', 'xen'))

import xenbed  # noqa: E402


def tested_configs(text):
    """[(script, block text)] for each ".. tested-config: SCRIPT" comment
    followed by a code block."""
    lines = text.split('\n')
    out = []
    for i, line in enumerate(lines):
        m = re.match(r'^\.\. tested-config: (\S+)$', line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith('.. code-block::'):
            if lines[j].strip():
                raise ValueError('line %d: text between tested-config and '
                                 'its code block' % (j + 1))
            j += 1
        j += 1
        while j < len(lines) and re.match(r'^   :\w', lines[j]):
            j += 1                                  # block options
        block = []
        while j < len(lines) and (not lines[j].strip() or
                                  lines[j].startswith('   ')):
            block.append(lines[j][3:])
            j += 1
        out.append((m.group(1), '\n'.join(block).strip('\n') + '\n'))
    return out


class TestXenDocs(unittest.TestCase):
    def test_configs_are_the_tested_ones(self):
        with open(DOC, encoding='utf-8') as f:
            configs = tested_configs(f.read())
        scripts = sorted(s for s, _ in configs)
        self.assertEqual(scripts, ['tests/xen/test-xen-driver-domain.py',
                                   'tests/xen/test-xen-net.py',
                                   'tests/xen/test-xen-softdev.py'])
        for script, block in configs:
            with self.subTest(script=script):
                got = subprocess.run(
                    [sys.executable, os.path.join(TOP, script),
                     '--print-config'],
                    capture_output=True, text=True, check=True).stdout
                self.assertEqual(block, got)

    def test_block_parser(self):
        text = ('x\n.. tested-config: a.py\n\n.. code-block:: ini\n'
                '   :caption: c\n\n   k = 1\n\n   l = [\n       "v"\n   ]\n'
                'after\n')
        self.assertEqual(tested_configs(text),
                         [('a.py', 'k = 1\n\nl = [\n    "v"\n]\n')])
        with self.assertRaises(ValueError):
            tested_configs('.. tested-config: a.py\ntext\n.. code-block::\n')

    def test_xl_quoting(self):
        self.assertEqual(xenbed.xl_string('a b'), '"a b"')
        # JSON for -object: single quotes, which xl takes literally
        self.assertEqual(xenbed.xl_string('{"a": 1}'), '\'{"a": 1}\'')
        for bad in ('a"b\'c', 'a\\b', 'a\nb'):
            with self.assertRaises(ValueError):
                xenbed.xl_string(bad)
        self.assertEqual(xenbed.xl_list([]), '[ ]')
        self.assertEqual(xenbed.xl_list(['-a', '{"b": 2}']),
                         '[\n    "-a",\n    \'{"b": 2}\'\n]')


if __name__ == '__main__':
    unittest.main()
