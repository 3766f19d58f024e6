#!/usr/bin/python3
"""
Guest test: softdev-fault under a TCG guest, driven from the guest's
shell.  1. On a second disk (vdb) with rules set over QMP, the guest
counts what its direct reads and writes see: failed reads (after, count),
failed writes (a probability with a seed), corrupted reads (checksums),
delays, torn writes; each count is exactly what query-softdevs says the
rule injected.  2. On vda, with cache-model=volatile: the guest writes a
region and flushes it, writes another and does not; a power cut (action
stop) stops the VM, the disk below holds the first region and not the
second (checksums), and after system_reset the guest boots on it and
reads the same.  3. ext4 on vda under a workload of creates, fsyncs,
renames and deletes: the VM is stopped with writes in the cache, their
crash states are enumerated (softdev-fault-crash-states), and every state
made by scripts/softdev_crashstates.py is checked with e2fsck -n, after
e2fsck replays its journal (the states a correct file system must
survive) and, reported only, before.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts'))

import guestbed  # noqa: E402
import softdev_crashstates as cs  # noqa: E402

DISK_SIZE = 64 << 20
DISK1_SIZE = 16 << 20
BLOCKS = 64                  # 4 KiB blocks the rules' phases use on vdb


def node(qmp, name):
    return [e for e in qmp.cmd('query-softdevs') if e['node-name'] == name][0]


def main():
    args = guestbed.image_test_args(__doc__)
    qemu_img = os.path.join(os.path.dirname(args.qemu), 'qemu-img')
    work = tempfile.mkdtemp(prefix='softdev-fault-')
    disk = os.path.join(work, 'disk.img')
    disk1 = os.path.join(work, 'disk1.img')
    for path, size in ((disk, DISK_SIZE), (disk1, DISK1_SIZE)):
        subprocess.run([qemu_img, 'create', '-q', '-f', 'raw', path,
                        str(size)], check=True)
    errors = []
    t0 = time.monotonic()
    log = os.path.join(work, 'console.log')
    extra = ['-blockdev', f'driver=file,node-name=disk0,filename={disk},'
             'discard=unmap',
             '-blockdev', 'driver=softdev-fault,node-name=f0,file=disk0,'
             'cache-model=volatile,discard=unmap',
             '-device', 'virtio-blk-pci,drive=f0,id=vd0',
             '-blockdev', f'driver=file,node-name=disk1,filename={disk1}',
             '-blockdev', 'driver=softdev-fault,node-name=f1,file=disk1',
             '-device', 'virtio-blk-pci,drive=f1,id=vd1,werror=report,rerror=report']
    with guestbed.GuestBed(args.qemu, os.path.join(args.guest_dir,
                                                   'vmlinuz'),
                           os.path.join(args.guest_dir, 'initrd.img'),
                           'softdev.mode=shell', extra, log_path=log) as bed:
        try:
            bed.wait_for(r'SOFTDEV-SHELL', args.timeout)
            time.sleep(1)
            sh = guestbed.Shell(bed, args.timeout)
            qmp = bed.qmp()
            # The bed runs with -no-reboot; the power cuts boot again
            qmp.cmd('set-action', reboot='reset')
            rules_seen_by_guest(sh, qmp, errors)
            power_cut(sh, qmp, disk, errors, args.timeout)
            crash_states(sh, qmp, disk, work, errors)
            bed.write('exit\n')
            bed.wait_exit(60)
        except (TimeoutError, guestbed.GuestError, guestbed.QMPError) as e:
            errors.append(f'{e} (console: {log})')
    if not errors:
        shutil.rmtree(work, ignore_errors=True)
    print(f'test-fault: {time.monotonic() - t0:.0f} s')
    return guestbed.report(errors)


def guest_count(sh, errors, what, loop_body):
    """Run @loop_body for i in 0..BLOCKS-1 in the guest; it adds 1 to n
    for each thing it counts; return n"""
    out = sh.ok(f'n=0; for i in $(seq 0 {BLOCKS - 1}); do {loop_body}; '
                f'done; echo "COUNT $n"', errors, what, 300)
    found = [re.match(r'COUNT (\d+)$', t) for t in out]
    found = [m for m in found if m]
    return int(found[-1].group(1)) if found else -1


def rules_seen_by_guest(sh, qmp, errors):
    read = ('dd if=/dev/vdb of=/dev/null bs=4k count=1 skip=$((256 + i)) '
            'iflag=direct 2>/dev/null || n=$((n + 1))')
    write = ('dd if=/tmp/blk of=/dev/vdb bs=4k count=1 seek=$((256 + i)) '
             'oflag=direct 2>/dev/null || n=$((n + 1))')
    differs = ('[ "$(dd if=/dev/vdb bs=4k count=1 skip=$((256 + i)) '
               'iflag=direct 2>/dev/null | md5sum)" = "$(md5sum < /tmp/blk)"'
               ' ] || n=$((n + 1))')
    sh.ok('dd if=/dev/urandom of=/tmp/blk bs=4k count=1 2>/dev/null',
          errors, 'a block of random data')
    region = {'offset': 1 << 20, 'length': BLOCKS * 4096}
    cases = [
        ('failed reads', read,
         {'op': 'read', 'action': 'fail', 'after': 3, 'count': 5}),
        ('failed writes (ENOSPC)', write,
         {'op': 'write', 'action': 'fail', 'errno': 'ENOSPC',
          'probability': 0.3, 'seed': 11}),
        ('written blocks that differ', differs, None),
        ('corrupted reads', differs,
         {'op': 'read', 'action': 'corrupt', 'flip-bits': 3,
          'probability': 0.25, 'seed': 3}),
        ('failed reads after a delay', read,
         {'op': 'read', 'action': 'delay', 'delay-ns': 50000000,
          'count': 4}),
        ('torn writes', write,
         {'op': 'write', 'action': 'tear', 'tear-bytes': 2048,
          'count': 3}),
        ('torn blocks', differs, None),
    ]
    failed_writes = 0
    for what, body, rule in cases:
        if what == 'torn writes':
            # On zeroes, so that a torn block differs from a whole one
            qmp.cmd('softdev-fault-clear', **{'node-name': 'f1'})
            sh.ok('dd if=/dev/zero of=/dev/vdb bs=4k count=64 seek=256 '
                  'oflag=direct 2>/dev/null', errors, 'zeroes')
        rules = [dict(region, **rule)] if rule else []
        qmp.cmd('softdev-fault-set', **{'node-name': 'f1'}, rules=rules)
        n = guest_count(sh, errors, what, body)
        injected = node(qmp, 'f1')['injected']
        if what == 'failed writes (ENOSPC)':
            failed_writes = n
        # The blocks whose writes failed still hold zeroes
        want = {'written blocks that differ': failed_writes,
                'failed reads after a delay': 0,
                'torn blocks': 3}.get(what, injected)
        print(f'{what}: the guest counted {n}, expected {want} '
              f'(the rule injected {injected})')
        if n != want or (rule and not injected):
            errors.append(f'{what}: the guest counted {n}, expected {want} '
                          f'(injected {injected})')
        if what == 'written blocks that differ':
            # Every block written, for the reads that follow
            qmp.cmd('softdev-fault-clear', **{'node-name': 'f1'})
            guest_count(sh, errors, 'write all blocks', write)
        if what == 'failed reads after a delay' and injected != 4:
            errors.append(f'delays: {injected} injected, expected 4')
    qmp.cmd('softdev-fault-clear', **{'node-name': 'f1'})
    sh.ok('dmesg | grep -c "I/O error" || true', errors, 'I/O errors')


def md5_of(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return hashlib.md5(f.read(length)).hexdigest()


def power_cut(sh, qmp, disk, errors, timeout):
    """A flushed region survives a power cut, an unflushed one does not"""
    out = sh.ok('dd if=/dev/urandom of=/tmp/a bs=64k count=16 2>/dev/null; '
                'dd if=/dev/urandom of=/tmp/b bs=64k count=16 2>/dev/null; '
                'dd if=/tmp/a of=/dev/vda bs=64k oflag=direct conv=fsync '
                '2>/dev/null && dd if=/tmp/b of=/dev/vda bs=64k seek=32 '
                'oflag=direct 2>/dev/null && md5sum /tmp/a /tmp/b',
                errors, 'the regions')
    sums = {m.group(2)[-1]: m.group(1) for m in
            (re.match(r'([0-9a-f]{32})\s+(\S+)$', t) for t in out) if m}
    before = node(qmp, 'f0')
    cut = qmp.cmd('softdev-fault-powercut', **{'node-name': 'f0'},
                  action='stop')
    qmp.wait_event('STOP', 30)
    zero = hashlib.md5(bytes(1 << 20)).hexdigest()
    a, b = md5_of(disk, 0, 1 << 20), md5_of(disk, 2 << 20, 1 << 20)
    print(f'power cut: {before["cached-writes"]} writes cached, {cut}; the '
          f'flushed region {"survived" if a == sums.get("a") else "LOST"}, '
          f'the unflushed one {"is gone" if b == zero else "SURVIVED"}')
    if a != sums.get('a') or b != zero or cut['lost'] < 1 or \
            cut['lost'] != before['cached-writes']:
        errors.append(f'power cut: flushed {a} (want {sums.get("a")}), '
                      f'unflushed {b} (want zeroes), {cut}')
    qmp.cmd('system_reset')
    qmp.cmd('cont')
    sh.bed.wait_for(r'SOFTDEV-SHELL', timeout)
    time.sleep(1)
    out = sh.ok('dd if=/dev/vda bs=64k count=16 iflag=direct 2>/dev/null | '
                'md5sum; dd if=/dev/vda bs=64k count=16 skip=32 iflag=direct '
                '2>/dev/null | md5sum', errors, 'the regions after reboot')
    seen = [m.group(1) for m in
            (re.match(r'([0-9a-f]{32})\s+-$', t) for t in out) if m]
    print(f'after system_reset the guest reads: flushed region '
          f'{"intact" if seen[:1] == [a] else seen[:1]}, unflushed '
          f'{"zeroes" if seen[1:] == [zero] else seen[1:]}')
    if seen != [a, zero]:
        errors.append(f'after the reboot the guest reads {seen}, expected '
                      f'{[a, zero]}')


WORKLOAD = (
    '(i=0; while [ ! -e /tmp/stop ]; do d=/mnt/fs/d$((i % 5)); '
    'mkdir -p $d; dd if=/dev/urandom of=$d/f$i bs=4k count=$((i % 7 + 1)) '
    'conv=fsync 2>/dev/null; mv $d/f$i $d/g$i; '
    'rm -f /mnt/fs/d$(((i + 2) % 5))/g$((i - 8)); '
    '[ $((i % 4)) = 0 ] && sync; i=$((i + 1)); done; echo WORK-DONE $i) &')


def e2fsck(image, replay):
    """Exit status of e2fsck -fn on @image, after replaying its journal
    if @replay (as a mount would)"""
    if replay:
        subprocess.run(['e2fsck', '-E', 'journal_only', '-y', image],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(['e2fsck', '-fn', image], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def crash_states(sh, qmp, disk, work, errors):
    sh.ok('mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt/fs && '
          'mount /dev/vda /mnt/fs && sync', errors, 'mkfs', 600)
    sh.bed.write(WORKLOAD + '\n')
    time.sleep(3)
    # A power cut that writes its crash states first, at a moment with
    # writes in the cache; it leaves the disk below as their base
    for _ in range(500):
        if node(qmp, 'f0')['cached-writes'] >= 3:
            break
        time.sleep(0.01)
    path = os.path.join(work, 'window.sdcrash')
    cut = qmp.cmd('softdev-fault-powercut', **{'node-name': 'f0'},
                  action='stop', **{'crash-states': path})
    r = cut['crash-states']
    qmp.wait_event('STOP', 30)
    base = os.path.join(work, 'base.img')
    shutil.copyfile(disk, base)
    window = cs.read_file(path)
    if r['writes'] < 1:
        errors.append(f'no write in the cache at the cut: {cut}')
    if cs.enumerate_subsets(window.writes) != (window.subsets,
                                               r['exhaustive']):
        errors.append('softdev_crashstates.py enumerates other states')
    ops = sorted({w.op for w in window.writes})
    clean = plain = 0
    bad = []
    img = os.path.join(work, 'state.raw')
    for i in range(window.nb_states()):
        state = window.state(i)
        cs.make_image(window, state, base, img)
        plain += e2fsck(img, False).returncode == 0
        res = e2fsck(img, True)
        if res.returncode == 0:
            clean += 1
        else:
            bad.append(f'state {i} {state}: e2fsck -fn exit '
                       f'{res.returncode}: {res.stdout[-300:]}')
        os.unlink(img)
    print(f'crash states: a window of {r["writes"]} writes ({", ".join(ops)}'
          f") at the cut; {window.nb_states()} states "
          f"({r['prefixes']} prefixes, {r['subsets']} subsets"
          f"{', all there are' if r['exhaustive'] else ''}); e2fsck -fn "
          f'after replaying the journal: {clean} clean; without replaying '
          f'it: {plain} clean')
    errors.extend(bad)
    # The guest boots on what the cut left: the journal replays at mount
    qmp.cmd('system_reset')
    qmp.cmd('cont')
    sh.bed.wait_for(r'SOFTDEV-SHELL', sh.timeout)
    time.sleep(1)
    out = sh.ok('mkdir -p /mnt/fs && mount /dev/vda /mnt/fs && ls /mnt/fs | wc -l && '
                'umount /mnt/fs && e2fsck -fn /dev/vda', errors,
                'mount and e2fsck -fn after the reboot', 300)
    print(f'after the reboot: mounted, e2fsck -fn: '
          f'{[t for t in out if "files" in t][-1:]}')


if __name__ == '__main__':
    sys.exit(main())
