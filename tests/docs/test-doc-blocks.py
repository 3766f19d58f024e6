#!/usr/bin/env python3
"""
test-doc-blocks.py [--list] [DOC...]: run the code blocks of the guides
(docs/user-guide.rst and docs/devel/*.rst by default), so that they
cannot drift from the code.

Each document runs in a scratch directory that looks like the top of the
checkout (its entries are symlinked there), in one bash session, block
after block, so that variables, files and background processes carry
over as they do for a reader who types along.  QEMU's build directory
(build/qemu/build and its storage-daemon/) is first on PATH.

Console blocks: each "$ " line is a command (continued over lines ending
in a backslash or inside an open quote); it must exit with 0, unless its
output is shown and all found (the guide shows a failure).  The lines
after it, up to the next command, are its output: each one must appear in
what the command printed, in order, where a number may stand for any
number, runs of blanks for any blanks, and "..." for anything (a line
of just "..." for any lines).  Lines starting "(QEMU) " are
the command's input (qmp-shell) instead.  Paths under /tmp/ are moved into
the scratch directory.  Background jobs are killed when the document is
done.

Python and C blocks need a marker, an rST comment just before the block:

  .. doc-test: file NAME       the block is the file NAME of the scratch
                               directory (a console block compiles or
                               runs it)
  .. doc-test: excerpt PATH    the block's lines appear, in a row, in
                               PATH of the checkout (blanks normalised;
                               a line "..." skips any lines; in C,
                               comments and blank lines do not count)
  .. doc-test: run             a Python block: run it with python3 in
                               the session, where it comes
  .. doc-test: skip REASON     not run, e.g. "guest: tests/guest/X.py"
                               for a block that needs a guest (X runs it)

A console block may carry "skip" too; "file" and "excerpt" are for any
block.  Unknown markers and unmarked C or Python blocks are errors.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
DEFAULT_DOCS = ['docs/user-guide.rst'] + sorted(
    os.path.relpath(p, TOP) for p in glob.glob(os.path.join(TOP, 'docs',
                                                            'devel',
                                                            '*.rst')))
MARK = re.compile(r'^\s*\.\. doc-test: (file|excerpt|skip|run)\b\s*(.*?)\s*$')
BLOCK = re.compile(r'^(\s*)\.\. code-block:: (\w+)\s*$')
NUMBER = re.compile(r'\d+(?:\.\d+)?')


class DocError(Exception):
    pass


class Block:
    def __init__(self, doc, line, lang, text, marker):
        self.doc, self.line, self.lang, self.text = doc, line, lang, text
        self.marker = marker        # (kind, argument) or None

    def where(self):
        return f'{self.doc}:{self.line}'


def parse(doc, text):
    """The code blocks of @text, with their markers."""
    lines = text.split('\n')
    blocks = []
    marker = None
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if m:
            marker = (m.group(1), m.group(2))
            i += 1
            continue
        if lines[i].lstrip().startswith('.. doc-test'):
            raise DocError(f'{doc}:{i + 1}: unknown marker: {lines[i]}')
        m = BLOCK.match(lines[i])
        if not m:
            if lines[i].strip() and marker:
                raise DocError(f'{doc}:{i + 1}: text between a doc-test '
                               'marker and its code block')
            i += 1
            continue
        indent = len(m.group(1)) + 3
        start = i + 1
        i += 1
        while i < len(lines) and re.match(r'^\s+:\w', lines[i]):
            i += 1                                  # block options
        body = []
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) >=
                                  indent):
            body.append(lines[i][indent:])
            i += 1
        blocks.append(Block(doc, start, m.group(2),
                            '\n'.join(body).strip('\n') + '\n', marker))
        marker = None
    return blocks


class Command:
    def __init__(self, text, line):
        self.text, self.line = text, line
        self.stdin = []
        self.expect = []


def open_quote(text):
    try:
        shlex.split(text)
        return False
    except ValueError:
        return True


def commands(block):
    """The commands of a console block, with their input and output."""
    out = []
    lines = block.text.rstrip('\n').split('\n')
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith('$ '):
            text, first = line[2:], block.line + i + 1
            while (text.endswith('\\') or open_quote(text)) and \
                    i + 1 < len(lines):
                i += 1
                text += '\n' + lines[i]
            out.append(Command(text, first))
        elif not out:
            raise DocError(f'{block.where()}: output before any command')
        elif line.startswith('(QEMU) '):
            out[-1].stdin.append(line[len('(QEMU) '):])
        elif re.match(r'^\((Pdb|gdb)\) ', line):
            raise DocError(f'{block.where()}: an interactive debugger '
                           'session: mark it "doc-test: skip"')
        elif line.strip():
            out[-1].expect.append(line)
        i += 1
    return out


def pattern(line):
    """A regex for an expected output line: numbers and blanks loose,
    "..." for anything."""
    out = []
    for i, piece in enumerate(line.strip().split('...')):
        parts = []
        pos = 0
        for m in NUMBER.finditer(piece):
            parts.append(re.escape(piece[pos:m.start()]))
            parts.append(r'\d+(?:\.\d+)?')
            pos = m.end()
        parts.append(re.escape(piece[pos:]))
        out.append(re.sub(r'(\\ )+', r'\\s+', ''.join(parts)))
    return '.*'.join(out)


def check_output(cmd, got):
    lines = got.split('\n')
    pos = 0
    for want in cmd.expect:
        if want.strip() == '...':
            continue
        rx = re.compile(pattern(want))
        while pos < len(lines) and not rx.search(lines[pos]):
            pos += 1
        if pos == len(lines):
            return want
        pos += 1
    return None


def code_lines(text, lang):
    """@text's lines with blanks normalised; for C without comments and
    blank lines, so that a guide may shorten or leave out comments."""
    if lang == 'c':
        text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    lines = [' '.join(line.split()) for line in text.split('\n')]
    return [line for line in lines if line] if lang == 'c' else lines


def excerpt_ok(block, path):
    """Whether @block's lines are lines of @path, in a row; a line "..."
    in the block stands for any lines in between."""
    with open(os.path.join(TOP, path), encoding='utf-8') as f:
        hay = code_lines(f.read(), block.lang)
    want = code_lines(block.text, block.lang)
    chunks = [[]]
    for line in want:
        if line == '...':
            chunks.append([])
        else:
            chunks[-1].append(line)
    while chunks[-1] and not chunks[-1][-1]:
        chunks[-1].pop()
    pos = 0
    for chunk in chunks:
        for i in range(pos, len(hay) - len(chunk) + 1):
            if hay[i:i + len(chunk)] == chunk:
                break
        else:
            return False
        pos = i + len(chunk)
    return True


def scratch_tree(tmp):
    for name in os.listdir(TOP):
        if name != '.git':
            os.symlink(os.path.join(TOP, name), os.path.join(tmp, name))
    os.mkdir(os.path.join(tmp, 'tmp'))


def run_doc(doc, qemu_build, verbose):
    """Run one document; returns (failures, counts)."""
    with open(os.path.join(TOP, doc), encoding='utf-8') as f:
        blocks = parse(doc, f.read())
    failures = []
    counts = {'run': 0, 'file': 0, 'excerpt': 0, 'skip': 0}
    with tempfile.TemporaryDirectory(prefix='softdev-doc.') as tmp:
        scratch_tree(tmp)
        cmds = []
        for b in blocks:
            kind, arg = b.marker or (None, None)
            if kind == 'skip':
                counts['skip'] += 1
                continue
            if kind == 'excerpt':
                counts['excerpt'] += 1
                if not excerpt_ok(b, arg):
                    failures.append(f'{b.where()}: not found in {arg}')
                continue
            if kind == 'file':
                counts['file'] += 1
                with open(os.path.join(tmp, arg), 'w', encoding='utf-8') as f:
                    f.write(b.text)
                continue
            if kind == 'run' and b.lang == 'python':
                counts['run'] += 1
                c = Command("/usr/bin/python3 - <<'DOC_TEST_EOF'\n" +
                            b.text + 'DOC_TEST_EOF', b.line)
                cmds.append(c)
                continue
            if kind:        # "run" on something else than Python
                raise DocError(f'{b.where()}: "doc-test: run" is for '
                               f'Python blocks, not {b.lang}')
            if b.lang != 'console':
                failures.append(f'{b.where()}: a {b.lang} block without a '
                                'doc-test marker')
                continue
            counts['run'] += 1
            cmds += commands(b)
        if cmds:
            failures += run_commands(doc, cmds, tmp, qemu_build, verbose)
    return failures, counts


def run_commands(doc, cmds, tmp, qemu_build, verbose):
    tmpdir = os.path.join(tmp, 'tmp')
    script = ['exec 2>&1', 'shopt -s expand_aliases',
              f'cd {shlex.quote(tmp)}',
              f'export PATH={shlex.quote(qemu_build)}:'
              f'{shlex.quote(qemu_build)}/storage-daemon:$PATH',
              'export TMPDIR=' + shlex.quote(tmpdir)]
    for n, c in enumerate(cmds):
        text = c.text.replace('/tmp/', tmpdir + '/')
        stdin = os.path.join(tmpdir, f'.stdin{n}')
        with open(stdin, 'w', encoding='utf-8') as f:
            f.write(''.join(s + '\n' for s in c.stdin))
        script += [f'echo "@@doc-test begin {n}"',
                   f'{text} < {shlex.quote(stdin)}' if c.stdin and
                   not text.rstrip().endswith('&') else text,
                   f'echo "@@doc-test end {n} $?"']
    script += ['jobs -p | xargs -r kill 2>/dev/null', 'wait', 'exit 0']
    r = subprocess.run(['timeout', '300', 'bash', '--noprofile', '--norc'],
                       input='\n'.join(script) + '\n', capture_output=True,
                       text=True)
    out = r.stdout + r.stderr
    failures = []
    for n, c in enumerate(cmds):
        m = re.search(rf'@@doc-test begin {n}\n(.*?)@@doc-test end {n} '
                      r'(\d+)\n', r.stdout, re.S)
        where = f'{doc}:{c.line}'
        if not m:
            failures.append(f'{where}: did not finish (bash: {r.returncode})'
                            f'\n{out[-2000:]}')
            break
        got, rc = m.group(1), int(m.group(2))
        if verbose:
            print(f'--- {where}: $ {c.text}\n{got}(exit {rc})')
        missing = check_output(c, got)
        if rc != 0 and (missing is not None or not c.expect):
            failures.append(f'{where}: exit {rc}: $ {c.text}\n{got}')
            continue
        if missing is not None:
            failures.append(f'{where}: output lacks {missing!r}: '
                            f'$ {c.text}\n{got}')
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--qemu-build',
                    default=os.path.join(TOP, 'build', 'qemu', 'build'))
    ap.add_argument('-v', '--verbose', action='store_true')
    ap.add_argument('docs', nargs='*', default=DEFAULT_DOCS)
    args = ap.parse_args()
    qemu_build = os.path.abspath(args.qemu_build)
    failed = 0
    for doc in args.docs:
        try:
            failures, counts = run_doc(doc, qemu_build, args.verbose)
        except DocError as e:
            failures, counts = [str(e)], {}
        summary = ', '.join(f'{v} {k}' for k, v in counts.items())
        print(f'{doc}: {"FAIL" if failures else "ok"} ({summary})')
        for f in failures:
            print('  ' + f.replace('\n', '\n    '))
        failed += bool(failures)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
