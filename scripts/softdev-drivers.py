#!/usr/bin/env python3
"""
softdev-drivers.py SRCDIR QEMUDIR: the QAPI entries of the in-process soft
devices listed in SRCDIR/block/softdev/devices.

Adding an in-process soft device takes one new file in block/softdev/
and its name on a line of block/softdev/devices; everything QEMU's schema
needs is made from the file:

- the driver name, from the SoftdevDriver's ``.name = "softdev-..."``
  (the only such name in the file);
- whether the node below ("file") may be left out, from
  ``.lower_optional = true``;
- the options: a struct Softdev<Name>Options, defined either in
  SRCDIR/qapi/*.json or in a comment of the file that starts with a line
  ``/* QAPI`` (the rest of that line is free text) and holds QAPI schema
  text on the lines after it, each prefixed with " * " (or " *" alone).

Writes QEMUDIR/qapi/block-core.json with the drivers added to
BlockdevDriver (members and their documentation) and to BlockdevOptions,
where the hook patch left markers, and at its end the options from the
files and a BlockdevOptionsSoftdev<Name> per driver (its options plus
"file").  They go into block-core.json itself because they may refer to
its types (BlockdevRef), and block-core.json cannot include a module that
refers back to it.  block-core.json is made from the copy that overlay.sh
saved right after the hook patches (ORIG, the third argument), so running
this again gives the same file.  Files are only written when they change,
so that a build does not redo what it did.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import glob
import os
import re
import sys

ENUM_MARK = '# softdev: the BlockdevDriver members of the soft devices\n'
UNION_MARK = '# softdev: the BlockdevOptions branches of the soft devices\n'
SINCE = '10.0 (softdev)'


class RegistryError(Exception):
    pass


def camel(driver):
    """softdev-foo-bar -> SoftdevFooBar"""
    return ''.join(w.capitalize() for w in driver.split('-'))


def qapi_block(text, path):
    """The QAPI schema in the file's ``/* QAPI`` comment, or ''."""
    m = re.search(r'^/\* QAPI\b.*?\n(.*?)^ \*/', text, re.S | re.M)
    if not m:
        return ''
    lines = []
    for line in m.group(1).splitlines():
        if line == ' *':
            lines.append('')
        elif line.startswith(' * '):
            lines.append(line[3:])
        else:
            raise RegistryError(f'{path}: QAPI comment line without " * ": '
                                f'{line!r}')
    return '\n'.join(lines).strip('\n') + '\n'


def read_devices(src):
    """[(driver, source file, lower optional, QAPI text)] in list order"""
    listing = os.path.join(src, 'block', 'softdev', 'devices')
    devices = []
    with open(listing, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            path = os.path.join(src, 'block', 'softdev', line)
            where = f'{listing}:{n}'
            if not re.fullmatch(r'[a-z0-9_-]+\.c', line):
                raise RegistryError(f'{where}: not a C file name: {line!r}')
            try:
                with open(path, encoding='utf-8') as c:
                    text = c.read()
            except OSError as e:
                raise RegistryError(f'{where}: {e.strerror}: {path}')
            # the SoftdevDriver's name (its QemuOptsList may repeat it)
            names = sorted(set(re.findall(
                r'\.name\s*=\s*"(softdev-[a-z0-9-]+)"', text)))
            if len(names) != 1:
                raise RegistryError(f'{path}: needs one SoftdevDriver name '
                                    f'(.name = "softdev-..."), found '
                                    f'{names or "none"}')
            optional = bool(re.search(r'\.lower_optional\s*=\s*true', text))
            devices.append((names[0], line, optional, qapi_block(text, path)))
    drivers = [d[0] for d in devices]
    for d in drivers:
        if drivers.count(d) > 1:
            raise RegistryError(f'{listing}: {d} is listed twice')
    return devices


def defined_types(src, extra):
    text = extra
    for path in glob.glob(os.path.join(src, 'qapi', '*.json')):
        with open(path, encoding='utf-8') as f:
            text += f.read()
    return set(re.findall(r"'(?:struct|enum|union|alternate)':\s*'(\w+)'",
                          text))


def generated_schema(src, devices):
    """The options from the files and a BlockdevOptions branch type per
    driver, to append to block-core.json"""
    out = ['', '#',
           '# The soft devices of block/softdev/devices, added by',
           '# scripts/softdev-drivers.py (softdev)', '#', '']
    fragments = ''.join(q for _, _, _, q in devices)
    known = defined_types(src, fragments)
    for driver, path, _, qapi in devices:
        if qapi:
            out += [f'# From block/softdev/{path}', '', qapi]
    for driver, path, optional, _ in devices:
        opts = camel(driver) + 'Options'
        name = 'BlockdevOptions' + camel(driver)
        base = f"\n  'base': '{opts}'," if opts in known else ''
        see = f' (see {opts})' if opts in known else ''
        below = ('the node below (none: a device of its own)' if optional
                 else 'the node below')
        out += ['##', f'# @{name}:', '#',
                f'# Driver specific block device options for the {driver}',
                f'# soft device{see}.', '#', f'# @file: {below}', '#',
                f'# Since: {SINCE}', '##',
                f"{{ 'struct': '{name}',{base}",
                f"  'data': {{ '{'*' if optional else ''}file': "
                "'BlockdevRef' } }", '']
    return '\n'.join(out)


def block_core(src, orig, devices):
    """block-core.json with the drivers added at the hook's markers and
    their types at the end"""
    for mark in (ENUM_MARK, UNION_MARK):
        if orig.count(mark.strip()) != 1:
            raise RegistryError(f'block-core.json lacks the marker '
                                f'{mark.strip()!r} (hook patch 0002)')
    lines = orig.splitlines(True)
    out = []
    in_doc = False
    for line in lines:
        if line.startswith('# @BlockdevDriver:'):
            in_doc = True
        elif in_doc and line.startswith('# Features:'):
            for driver, _, _, _ in devices:
                out += [f'# @{driver}: Since {SINCE}\n', '#\n']
            in_doc = False
        out.append(line)
        indent = line[:len(line) - len(line.lstrip())]
        if line.strip() == ENUM_MARK.strip():
            out += [f"{indent}'{d}',\n" for d, _, _, _ in devices]
        elif line.strip() == UNION_MARK.strip():
            out += [f"{indent}'{d}': 'BlockdevOptions{camel(d)}',\n"
                    for d, _, _, _ in devices]
    return ''.join(out) + generated_schema(src, devices)


def write_if_changed(path, text):
    try:
        with open(path, encoding='utf-8') as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def main(argv):
    if len(argv) != 4:
        sys.exit('usage: softdev-drivers.py SRCDIR QEMUDIR ORIG-BLOCK-CORE')
    src, qemu, orig = argv[1:]
    try:
        devices = read_devices(src)
        with open(orig, encoding='utf-8') as f:
            core = block_core(src, f.read(), devices)
    except (RegistryError, OSError) as e:
        sys.exit(f'softdev-drivers.py: {e}')
    if write_if_changed(os.path.join(qemu, 'qapi', 'block-core.json'), core):
        print('softdev-drivers.py: ' +
              ', '.join(d for d, _, _, _ in devices))


if __name__ == '__main__':
    main(sys.argv)
