#!/usr/bin/python3
"""
Guest test: softdev-timetravel under a TCG guest's ext4, driven from the
guest's shell.  While the guest writes files, the host inserts
softdev-timetravel above its disk over QMP and removes it again: the
guest's files stay intact.  With a fresh journal inserted again, the
guest writes files across three marks (each taken at a flush point: the
file system remounted read-only); a view at each mark, hot-plugged into
the guest as a second disk, passes e2fsck -n and holds exactly the files
(checksums) as of its mark, although the live disk moved on; then the
guest unmounts its disk, the host reverts it to the first mark, and the
guest mounts it again and finds exactly the first mark's files.

SPDX-License-Identifier: GPL-2.0-or-later
"""

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import guestbed  # noqa: E402

DISK_SIZE = 128 << 20
JOURNAL_SIZE = 256 << 20


def main():
    args = guestbed.image_test_args(__doc__)
    qemu_img = os.path.join(os.path.dirname(args.qemu), 'qemu-img')
    work = tempfile.mkdtemp(prefix='softdev-timetravel-')
    disk = os.path.join(work, 'disk.img')
    journals = [os.path.join(work, f'journal{i}.img') for i in (0, 1)]
    for path, size in [(disk, DISK_SIZE)] + [(j, JOURNAL_SIZE)
                                             for j in journals]:
        subprocess.run([qemu_img, 'create', '-q', '-f', 'raw', path,
                        str(size)], check=True)
    errors = []
    t0 = time.monotonic()
    log = os.path.join(work, 'console.log')
    extra = ['-blockdev', f'driver=file,node-name=disk0,filename={disk},'
             'discard=unmap',
             '-device', 'virtio-blk-pci,drive=disk0,id=vd0',
             # q35: the views are hot-plugged behind a root port
             '-device', 'pcie-root-port,id=rp1,chassis=1,slot=1']
    with guestbed.GuestBed(args.qemu, os.path.join(args.guest_dir,
                                                   'vmlinuz'),
                           os.path.join(args.guest_dir, 'initrd.img'),
                           'softdev.mode=shell', extra, log_path=log) as bed:
        try:
            bed.wait_for(r'SOFTDEV-SHELL', args.timeout)
            time.sleep(1)
            sh = guestbed.Shell(bed, args.timeout)
            qmp = bed.qmp()
            run_phases(sh, qmp, journals, errors)
            bed.write('exit\n')
            bed.wait_exit(60)
        except (TimeoutError, guestbed.GuestError, guestbed.QMPError) as e:
            errors.append(f'{e} (console: {log})')
    print(f'test-timetravel: {time.monotonic() - t0:.0f} s')
    return guestbed.report(errors)


def add_journal(qmp, name, path):
    qmp.cmd('blockdev-add', driver='file', **{'node-name': name},
            filename=path)


def run_phases(sh, qmp, journals, errors):
    sh.ok('mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt/fs /mnt/v && '
          'mount /dev/vda /mnt/fs', errors, 'mkfs', 600)

    # 1. Live insert and remove under the guest's writes
    sh.bed.write('(i=0; while [ ! -e /tmp/stop ]; do '
                 'dd if=/dev/urandom of=/mnt/fs/live$((i % 40)) bs=64k '
                 'count=8 2>/dev/null; sync; i=$((i + 1)); done; '
                 'echo LIVE-DONE $i) &\n')
    time.sleep(3)
    add_journal(qmp, 'j0', journals[0])
    qmp.cmd('softdev-insert', driver='softdev-timetravel',
            **{'node-name': 'tt0'}, file='disk0', journal='j0')
    time.sleep(6)
    info = [e for e in qmp.cmd('query-softdevs')
            if e['node-name'] == 'tt0'][0]
    qmp.cmd('softdev-remove', **{'node-name': 'tt0'})
    time.sleep(3)
    sh.run('touch /tmp/stop')
    sh.bed.wait_for(r'LIVE-DONE (\d+)', sh.timeout)
    out = sh.ok('cd /mnt/fs && md5sum live* > /tmp/live.md5 && sync && '
                'echo 3 > /proc/sys/vm/drop_caches && md5sum -c /tmp/live.md5'
                ' | grep -c OK; cd /', errors, 'live files')
    print(f'live insert/remove: {info["records"]} records journalled while '
          f'inserted; files read back intact: {out[-1] if out else "?"}')
    sh.ok('dmesg | grep -i "i/o error\\|ext4-fs error" && exit 1; true',
          errors, 'guest I/O errors')
    qmp.cmd('blockdev-del', **{'node-name': 'j0'})

    # 2. Marks at flush points, with a fresh journal
    add_journal(qmp, 'j1', journals[1])
    qmp.cmd('softdev-insert', driver='softdev-timetravel',
            **{'node-name': 'tt1'}, file='disk0', journal='j1')
    steps = [
        'mkdir -p /mnt/fs/a && for i in 1 2 3 4; do dd if=/dev/urandom '
        'of=/mnt/fs/a/f$i bs=64k count=$((i * 4)) 2>/dev/null; done',
        'mkdir -p /mnt/fs/b && for i in 1 2 3; do dd if=/dev/urandom '
        'of=/mnt/fs/b/g$i bs=64k count=16 2>/dev/null; done; '
        'dd if=/dev/urandom of=/mnt/fs/a/f2 bs=64k count=3 conv=notrunc '
        '2>/dev/null',
        'rm -f /mnt/fs/a/f1 /mnt/fs/live1; dd if=/dev/urandom '
        'of=/mnt/fs/c bs=1M count=6 2>/dev/null; rm -rf /mnt/fs/b/g2',
    ]
    for n, step in enumerate(steps, 1):
        sh.ok(step, errors, f'step {n}')
        sh.ok(f'cd /mnt/fs && find . -type f | sort | xargs md5sum > '
              f'/tmp/m{n}.md5; cd / && mount -o remount,ro /mnt/fs',
              errors, f'checksums at m{n}')
        qmp.cmd('softdev-timetravel-mark', **{'node-name': 'tt1'},
                name=f'm{n}')
        sh.ok('mount -o remount,rw /mnt/fs', errors, 'remount')
    sh.ok('dd if=/dev/urandom of=/mnt/fs/after bs=1M count=4 2>/dev/null; '
          'sync', errors, 'after the marks')

    # 3. Each mark through a view hot-plugged as /dev/vdb
    for n in range(1, len(steps) + 1):
        qmp.cmd('blockdev-add', driver='softdev-timetravel-view',
                **{'node-name': f'v{n}', 'read-only': True},
                timetravel='tt1', mark=f'm{n}')
        qmp.cmd('device_add', driver='virtio-blk-pci', drive=f'v{n}',
                id=f'vv{n}', bus='rp1')
        sh.ok('i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do '
              'usleep 100000; i=$((i + 1)); done; [ -b /dev/vdb ]',
              errors, f'view m{n} appears')
        out = sh.ok('e2fsck -n /dev/vdb', errors, f'e2fsck -n of view m{n}',
                    300)
        clean = [t for t in out if 'clean' in t or 'files' in t]
        sh.ok(f'mount -o ro /dev/vdb /mnt/v && cd /mnt/v && '
              f'md5sum -c -s /tmp/m{n}.md5 && '
              f'[ "$(find . -type f | sort | xargs md5sum)" = '
              f'"$(cat /tmp/m{n}.md5)" ]; r=$?; cd /; umount /mnt/v; '
              f'exit_r() {{ return $r; }}; exit_r', errors,
              f'files of view m{n}')
        print(f'view m{n}: e2fsck -n: {clean[-1] if clean else "?"}')
        qmp.cmd('device_del', id=f'vv{n}')
        while qmp.wait_event('DEVICE_DELETED', 60).get(
                'data', {}).get('device') != f'vv{n}':
            pass                # the proxy's own event comes last
        qmp.cmd('blockdev-del', **{'node-name': f'v{n}'})
        sh.ok('i=0; while [ -b /dev/vdb ] && [ $i -lt 100 ]; do '
              'usleep 100000; i=$((i + 1)); done; [ ! -b /dev/vdb ]',
              errors, f'view m{n} goes')

    # 4. Revert the live disk to m1, with the file system unmounted
    sh.ok('umount /mnt/fs', errors, 'umount before the revert')
    r = qmp.cmd('softdev-timetravel-revert', **{'node-name': 'tt1'},
                mark='m1')
    sh.ok('echo 3 > /proc/sys/vm/drop_caches; e2fsck -n /dev/vda && '
          'mount /dev/vda /mnt/fs && cd /mnt/fs && '
          '[ "$(find . -type f | sort | xargs md5sum)" = '
          '"$(cat /tmp/m1.md5)" ]; r=$?; cd /; exit_r() { return $r; }; '
          'exit_r', errors, 'files after the revert to m1')
    info = [e for e in qmp.cmd('query-softdevs')
            if e['node-name'] == 'tt1'][0]
    print(f'revert to m1 (seq {r["seq"]}): reverts {info["reverts"]}, '
          f'{info["records"]} records, {info["logged-bytes"]} bytes '
          f'journalled, {info["base-bytes"]} of them base copies')
    sh.ok('umount /mnt/fs', errors, 'umount at the end')


if __name__ == '__main__':
    sys.exit(main())
