#!/usr/bin/python3
"""
Xen test of soft devices on PV disks: under QEMU/TCG, Xen 4.17's dom0
`xl create`s a PV domU whose qdisk disks are served by our QEMU, with
soft devices configured in the domain config alone (a softdev-xen-disk
object in device_model_args):

  xvda  rw, discard   softdev-xor (key 0x5a) then softdev-trace, on dom0's
                      /dev/vda (a raw image on the host)
  xvdb  rw, discard   no soft device (a file in dom0): the reference for
                      what the frontend should see
  xvdc  ro            softdev-trace (a file in dom0)
  xvdd  rw            softdev-tap, served by a soft-device process in dom0
                      (libsoftdev's C XOR example, key 0xa5; a file in dom0)

Once the three disks are connected, dom0 prints their backend and frontend
xenstore keys, and the host checks that xvda (soft devices) and xvdb (none)
negotiated the same features and that xvdc is offered read-only.  The
domU compares what its frontend negotiated for xvda and xvdb (size,
read-only, discard, flush/write cache, request limits: the sysfs view of
blkfront's features) and checks that xvdc is read-only and refuses writes;
then writes and verifies the softdev pattern on xvda over several rounds
(fsync'd writes, O_DIRECT re-reads), discards a range and syncs.  During
that I/O the host, through the device model's QMP, inserts a softdev-trace
above xvda-raw and removes it again, three times, checking each time that
query-softdevs shows it with the Xen disk it serves.  Before the domU
ends, query-softdevs must show the configured soft devices with their Xen
identity (domid, vdev, backend path) and the flushes, writes and the
discard the domU made.  On xvdd the domU writes 16 MiB in rounds and
re-reads everything uncached after each, while dom0 kills the
soft-device process (SIGKILL) and starts it again five times: the domU
must see no error, the tap node must count five disconnects and
reconnects and no timeout or failed request, and the file in dom0 must
hold the data XORed with the process's key.  Afterwards the host checks the image: every
written region holds the pattern XOR 0x5a (what softdev-xor stores),
everything else is zero.

Usage: test-xen-softdev.py --qemu QEMU --bed-dir OUTDIR_OF_build-xen-bed.sh
       test-xen-softdev.py --print-config

SPDX-License-Identifier: GPL-2.0-or-later
"""

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import xenbed  # noqa: E402
from xenbed import GuestError, QMPError, MIB  # noqa: E402

KEY = 0x5a
ROUNDS, REG_MIB, NREG, DISK_MIB = 6, 2, 4, 256
LIVE_CYCLES = 3
HOLD_S = 12         # the domU waits this long for the host's final look

# The soft devices, as a user writes them in xl.cfg's device_model_args.
XVDA_OBJECT = {
    'qom-type': 'softdev-xen-disk', 'id': 'sd-xvda', 'vdev': 'xvda',
    'chain': [{'driver': 'softdev-xor', 'key': KEY},
              {'driver': 'softdev-trace', 'node-name': 'xvda-trace'}]}
# xvdd: an out-of-process soft device in dom0 (libsoftdev's C XOR example,
# TAP_KEY), reached over a unix socket.
TAP_KEY = 0xa5
TAP_SOCK = '/run/softdev/xvdd.sock'
TAP_CHUNK, TAP_ROUNDS = 4, 4     # the domU writes MiB 1..16, 4 a round
TAP_MIB = (1, TAP_CHUNK * TAP_ROUNDS)
# dom0 kills the process (SIGKILL) and starts it again this many times
# during the domU's I/O on xvdd; on-disconnect=queue hides that.
TAP_KILLS = 5
XVDD_OBJECT = {
    'qom-type': 'softdev-xen-disk', 'id': 'sd-xvdd', 'vdev': 'xvdd',
    'chain': [{'driver': 'softdev-tap', 'on-disconnect': 'queue',
               'server': {'type': 'unix', 'path': TAP_SOCK}}]}
XVDC_OBJECT = {
    'qom-type': 'softdev-xen-disk', 'id': 'sd-xvdc', 'vdev': 'xvdc',
    'chain': [{'driver': 'softdev-trace'}]}

# xl-disk-configuration(5): target= must come last
DISK_SPEC = 'format=raw, vdev=%s, access=%s, backendtype=qdisk, target=%s'

# Xen's device ids of xvda, xvdb, xvdc (xen-vbd-interface(7): 202 << 8 | N << 4)
DEVIDS = {'xvda': 51712, 'xvdb': 51728, 'xvdc': 51744}
# xenstore keys that name a device or its ring (not features): they differ
# between any two disks.
XS_PER_DEVICE = {'backend', 'backend-id', 'frontend', 'frontend-id', 'dev',
                 'params', 'target', 'physical-device', 'physical-device-path',
                 'virtual-device', 'hotplug-status', 'script'}
XS_PER_DEVICE_PREFIX = ('ring-ref', 'event-channel')

# dom0: the two disks that live in dom0's memory; once the domU's three
# disks are connected (state 4 on both ends), print their backend and
# frontend xenstore keys as "XENBED-XS <vdev> <be|fe> <key> <value>".
DOM0_SCRIPT = r'''
xs_dump() {
    xenstore-ls "$3" 2>/dev/null | sed -n 's/^\([a-z0-9-]*\) = "\(.*\)"$/\1 \2/p' |
        while read -r k v; do echo "XENBED-XS $1 $2 $k $v"; done
}
xs_report() {
    t=0
    while [ $t -lt 180 ]; do
        d=$(domid_of %(name)s)
        if [ -n "$d" ]; then
            ok=1
            for dev in %(devids)s; do
                be=/local/domain/0/backend/qdisk/$d/$dev
                fe=/local/domain/$d/device/vbd/$dev
                [ "$(xenstore-read $be/state 2>/dev/null)" = 4 ] &&
                [ "$(xenstore-read $fe/state 2>/dev/null)" = 4 ] || ok=0
            done
            if [ $ok = 1 ]; then
                for pair in %(pairs)s; do
                    vdev=${pair%%%%=*} dev=${pair#*=}
                    xs_dump $vdev be /local/domain/0/backend/qdisk/$d/$dev
                    xs_dump $vdev fe /local/domain/$d/device/vbd/$dev
                done
                echo "XENBED-XS-DONE"
                return
            fi
        fi
        sleep 1
        t=$((t + 1))
    done
    echo "XENBED-XS-TIMEOUT"
}
xenbed_pre() {
    truncate -s %(mib)dM /tmp/xvdb.img && truncate -s %(mib)dM /tmp/xvdc.img &&
    truncate -s %(mib)dM /tmp/xvdd.img || return 1
    # xvdd's soft device, a process of its own (the device model connects
    # to it when the disk appears)
    mkdir -p /run/softdev && chmod 755 /job/softdev-xor || return 1
    start_xor
    i=0
    while [ ! -S %(sock)s ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
    [ -S %(sock)s ] || { cat /tmp/xor.log; return 1; }
    { xs_report & }
    { tap_chaos & }
}
start_xor() {
    /job/softdev-xor --unix %(sock)s key=%(key)#x >>/tmp/xor.log 2>&1 &
    XOR_PID=$!
}
# Once the domU's first write reached xvdd's file (MiB 1 is no longer
# zero), kill the soft-device process and start it again, TAP_KILLS times.
tap_chaos() {
    i=0
    while [ "$(dd if=/tmp/xvdd.img bs=4096 skip=256 count=1 status=none |
               tr -d '\000' | wc -c)" = 0 ] && [ $i -lt 600 ]; do
        usleep 500000
        i=$((i + 1))
    done
    k=0
    while [ $k -lt %(kills)d ]; do
        usleep 500000
        kill -9 $XOR_PID
        echo "XENBED-TAP-KILL $k uptime=$(cut -d' ' -f1 /proc/uptime)"
        usleep 300000
        start_xor
        k=$((k + 1))
    done
    echo "XENBED-TAP-CHAOS-DONE"
}
# What the XOR process stored on xvdd where the domU wrote.
xenbed_post() {
    set -- $(dd if=/tmp/xvdd.img bs=1M skip=%(tap_start)d count=%(tap_n)d \
             status=none | md5sum)
    echo "XENBED-XVDD-IMAGE md5=$1"
}
''' % {'mib': DISK_MIB, 'name': xenbed.DOMU_NAME, 'sock': TAP_SOCK,
       'key': TAP_KEY, 'tap_start': TAP_MIB[0], 'tap_n': TAP_MIB[1],
       'kills': TAP_KILLS,
       'devids': ' '.join(str(v) for v in DEVIDS.values()),
       'pairs': ' '.join('%s=%d' % kv for kv in DEVIDS.items())}

DOMU_SCRIPT = r'''
ERR=0
fail() { echo "XENBED-ERROR $*"; ERR=$((ERR + 1)); }
for d in xvda xvdb xvdc xvdd; do
    i=0
    while [ ! -b /dev/$d ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
    [ -b /dev/$d ] || { echo "XENBED-RESULT FAIL no /dev/$d"; exit 1; }
done
# What blkfront negotiated, as the block layer shows it.
feat() {
    q=/sys/block/$1/queue
    echo "size=$(cat /sys/block/$1/size) ro=$(cat /sys/block/$1/ro)" \
         "discard_max=$(cat $q/discard_max_bytes)" \
         "discard_gran=$(cat $q/discard_granularity)" \
         "write_cache=$(cat $q/write_cache | tr ' ' _)" \
         "fua=$(cat $q/fua 2>/dev/null)" \
         "max_hw_kb=$(cat $q/max_hw_sectors_kb)" \
         "max_segs=$(cat $q/max_segments)" \
         "lbs=$(cat $q/logical_block_size)" \
         "pbs=$(cat $q/physical_block_size)"
}
A=$(feat xvda); B=$(feat xvdb); C=$(feat xvdc)
echo "XENBED-FEATURES xvda $A"
echo "XENBED-FEATURES xvdb $B"
echo "XENBED-FEATURES xvdc $C"
[ "$A" = "$B" ] || fail "xvda (soft devices) and xvdb (none) differ"
case "$A" in *discard_max=0*) fail "xvda does not offer discard" ;; esac
case "$A" in *write_cache=write_back*) ;; *) fail "xvda has no flush" ;; esac
[ "$(cat /sys/block/xvdc/ro)" = 1 ] || fail "xvdc is not read-only"
if dd if=/dev/zero of=/dev/xvdc bs=4096 count=1 oflag=direct \
      status=none 2>/dev/null; then
    fail "a write to read-only xvdc succeeded"
fi
dd if=/dev/xvdc of=/dev/null bs=1M count=4 iflag=direct status=none ||
    fail "cannot read xvdc"
sh /job/disk.sh || ERR=$((ERR + 1))
# xvdd, served by a soft-device process in dom0 that dom0 kills and starts
# again meanwhile: write a chunk a round (fsync'd), re-read all uncached.
: >/tmp/d
r=0
while [ $r -lt %(tap_rounds)d ]; do
    first=$((%(tap_start)d + r * %(tap_chunk)d))
    : >/tmp/chunk
    i=$first
    while [ $i -lt $((first + %(tap_chunk)d)) ]; do
        pattern_block $i && cat /tmp/pat >>/tmp/chunk
        i=$((i + 1))
    done
    dd if=/tmp/chunk of=/dev/xvdd bs=1M seek=$first conv=notrunc,fsync \
        status=none || fail "xvdd: write of round $r failed"
    cat /tmp/chunk >>/tmp/d
    echo 3 >/proc/sys/vm/drop_caches
    dd if=/dev/xvdd of=/tmp/r bs=1M skip=%(tap_start)d \
        count=$(((r + 1) * %(tap_chunk)d)) iflag=direct status=none ||
        fail "xvdd: read of round $r failed"
    [ "$(md5_of /tmp/r)" = "$(md5_of /tmp/d)" ] ||
        fail "xvdd: round $r read back differs"
    r=$((r + 1))
done
echo "XENBED-XVDD md5=$(md5_of /tmp/d)"
# A discard of a range the workload never wrote (the end of the disk).
if ! blkdiscard -o $((%(disk_mib)d * 1048576 - 8388608)) -l 8388608 /dev/xvda \
       2>/tmp/bd.err; then
    fail "blkdiscard: $(cat /tmp/bd.err)"
fi
sync
echo "XENBED-HOLD uptime=$(cut -d' ' -f1 /proc/uptime)"
# The host looks at the device model now (it is gone once we end).
sleep %(hold)d
[ $ERR -eq 0 ] || { echo "XENBED-RESULT FAIL errors=$ERR"; exit 1; }
echo "XENBED-SOFTDEV PASS"
exit 0
''' % {'disk_mib': DISK_MIB, 'hold': HOLD_S, 'tap_start': TAP_MIB[0],
       'tap_chunk': TAP_CHUNK, 'tap_rounds': TAP_ROUNDS}


def by_name(entries):
    return {e['node-name']: e for e in entries}


def op_stats(entry, op):
    for st in entry['stats']:
        if st['op'] == op:
            return st
    raise KeyError(op)


def check_xen(entry, vdev, node, errors):
    xen = entry.get('xen')
    if not xen:
        errors.append('%s: no xen member in query-softdevs'
                      % entry['node-name'])
        return None
    if xen['vdev'] != vdev or xen['node'] != node or xen['domid'] < 1:
        errors.append('%s: wrong Xen identity %s' % (entry['node-name'], xen))
    if not re.fullmatch(r'/local/domain/0/backend/qdisk/%d/\d+'
                        % xen['domid'], xen['backend']):
        errors.append('%s: backend path %r' % (entry['node-name'],
                                               xen['backend']))
    return xen


def live_cycles(bed, qmp, errors, info):
    """Insert and remove a softdev-trace above xvda-raw while the domU
    writes and reads."""
    for i in range(LIVE_CYCLES):
        name = 'live%d' % i
        qmp.cmd('softdev-insert', driver='softdev-trace', **{
            'node-name': name, 'file': 'xvda-raw'})
        time.sleep(1.5)
        entries = by_name(qmp.cmd('query-softdevs'))
        e = entries.get(name)
        if not e:
            errors.append('%s: not in query-softdevs after insert' % name)
        else:
            check_xen(e, 'xvda', 'xvda-raw', errors)
            parents = [p['name'] for p in e['parents']]
            if parents != ['xvda-softdev0']:
                errors.append('%s: parents %s, want the xor node'
                              % (name, parents))
            info.setdefault('live_ops', []).append(
                sum(st['ops'] for st in e['stats']))
        qmp.cmd('softdev-remove', **{'node-name': name})
        if name in by_name(qmp.cmd('query-softdevs')):
            errors.append('%s: still there after softdev-remove' % name)
        print('test-xen-softdev: live cycle %d: inserted and removed %s '
              '(%s requests through it)' % (i, name,
                                            info.get('live_ops', ['?'])[-1]),
              flush=True)
        time.sleep(0.5)


def final_checks(qmp, errors, info):
    entries = by_name(qmp.cmd('query-softdevs'))
    info['softdevs'] = sorted(entries)
    want = {'xvda-softdev0': ('softdev-xor', 'xvda', 'xvda-raw'),
            'xvda-trace': ('softdev-trace', 'xvda', 'xvda-raw'),
            'xvdc-softdev0': ('softdev-trace', 'xvdc', 'xvdc-raw'),
            'xvdd-softdev0': ('softdev-tap', 'xvdd', 'xvdd-raw')}
    if sorted(entries) != sorted(want):
        errors.append('soft devices %s, want %s' % (sorted(entries),
                                                    sorted(want)))
    for name, (driver, vdev, node) in want.items():
        e = entries.get(name)
        if not e:
            continue
        if e['driver'] != driver:
            errors.append('%s: driver %s' % (name, e['driver']))
        info.setdefault('xen', {})[name] = check_xen(e, vdev, node, errors)
    tr = entries.get('xvda-trace')
    if tr:
        if tr['child'] != 'xvda-softdev0':
            errors.append('xvda-trace: child %s' % tr['child'])
        if [p['kind'] for p in tr['parents']] != ['device']:
            errors.append('xvda-trace: parents %s' % tr['parents'])
        w, f, d = (op_stats(tr, 'write'), op_stats(tr, 'flush'),
                   op_stats(tr, 'discard'))
        info['xvda_trace'] = {'write_bytes': w['bytes'], 'flushes': f['ops'],
                              'discards': d['ops'], 'errors':
                              sum(st['errors'] for st in tr['stats'])}
        if w['bytes'] < ROUNDS * NREG * REG_MIB * MIB:
            errors.append('xvda-trace saw %d bytes written, the domU wrote %d'
                          % (w['bytes'], ROUNDS * NREG * REG_MIB * MIB))
        if f['ops'] < ROUNDS:
            errors.append('xvda-trace saw %d flushes' % f['ops'])
        if d['ops'] < 1:
            errors.append('xvda-trace saw no discard')
        if info['xvda_trace']['errors']:
            errors.append('xvda-trace counted errors: %s' % tr['stats'])
    d = entries.get('xvdd-softdev0')
    if d and op_stats(d, 'write')['bytes'] < TAP_MIB[1] * MIB:
        errors.append('xvdd-softdev0 (softdev-tap) saw %d bytes written'
                      % op_stats(d, 'write')['bytes'])
    c = entries.get('xvdc-softdev0')
    if c and op_stats(c, 'read')['ops'] < 1:
        errors.append('xvdc-softdev0 saw no read')
    if c and op_stats(c, 'write')['ops']:
        errors.append('xvdc-softdev0 saw a write on a read-only disk')


def check_xenstore(lines, errors, info):
    """The backend and frontend keys dom0 printed: a disk with soft devices
    (xvda) must negotiate exactly what a disk without (xvdb) does; the
    read-only disk with a soft device (xvdc) must be offered read-only."""
    keys = {}
    for t in lines:
        m = re.match(r'^XENBED-XS (\S+) (be|fe) (\S+) ?(.*)$', t)
        if m:
            keys.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = \
                m.group(4)
    if 'XENBED-XS-DONE' not in lines:
        errors.append('dom0 did not see the three disks connected')
        return

    def features(vdev, side):
        return {k: v for k, v in keys.get((vdev, side), {}).items()
                if k not in XS_PER_DEVICE and
                not k.startswith(XS_PER_DEVICE_PREFIX)}

    for side in ('be', 'fe'):
        a, b = features('xvda', side), features('xvdb', side)
        if not a or a != b:
            errors.append('xenstore: %s keys of xvda (soft devices) and xvdb '
                          '(none) differ: %s' % (side, sorted(
                              set(a.items()) ^ set(b.items()))))
    be = features('xvda', 'be')
    for k in ('feature-flush-cache', 'feature-discard'):
        if be.get(k) != '1':
            errors.append('xenstore: xvda backend %s=%r' % (k, be.get(k)))
    c = features('xvdc', 'be')
    if c.get('mode') != 'r' or not int(c.get('info', '0')) & 4:
        errors.append('xenstore: xvdc backend not read-only (mode %r, info '
                      '%r)' % (c.get('mode'), c.get('info')))
    info['xs_backend'] = ' '.join('%s=%s' % kv for kv in sorted(be.items()))
    info['xs_frontend'] = ' '.join(
        '%s=%s' % kv for kv in sorted(features('xvda', 'fe').items()))


def check_tap_reconnects(bed, qmp, errors, info):
    """dom0 killed xvdd's soft-device process TAP_KILLS times, at least once
    while the domU was still doing I/O on xvdd: the softdev-tap node must
    have lost and regained it each time, with no request timed out or
    failed (the domU's own checks and the image show that no data was
    lost)."""
    if 'XENBED-TAP-CHAOS-DONE' not in bed.lines():
        try:
            bed.wait_for(r'^XENBED-TAP-CHAOS-DONE', 30)
        except TimeoutError:
            errors.append('dom0 did not finish killing the soft-device '
                          'process')
            return
    deadline = time.monotonic() + 15
    while True:
        e = by_name(qmp.cmd('query-softdevs')).get('xvdd-softdev0')
        if not e:
            errors.append('xvdd-softdev0: not in query-softdevs')
            return
        if e['connected'] and e['reconnects'] >= TAP_KILLS or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    tap = {k: e[k] for k in ('connected', 'disconnects', 'reconnects',
                             'replayed', 'timeouts')}
    tap['failed'] = sum(st['errors'] for st in e['stats'])
    times = bed.timed_lines()
    end = [ts for ts, t in times if t.startswith('[domU] XENBED-XVDD md5=')]
    tap['kills-during-io'] = len(
        [ts for ts, t in times if t.startswith('XENBED-TAP-KILL')
         and end and ts < end[0]])
    info['tap'] = tap
    if (not tap['connected'] or tap['reconnects'] != TAP_KILLS or
            tap['disconnects'] != TAP_KILLS or tap['timeouts'] or
            tap['failed']):
        errors.append('xvdd-softdev0 after %d kills of its process: %s'
                      % (TAP_KILLS, tap))
    if not tap['kills-during-io']:
        errors.append('no kill of the soft-device process fell into the '
                      'domU\'s I/O on xvdd')


def check_tap_disk(lines, domu, errors, info):
    """xvdd: the domU read back what it wrote, and the file in dom0 holds it
    XORed with TAP_KEY, as the soft-device process stores it."""
    data = b''.join(xenbed.guestbed.pattern_block(i) for i in
                    range(TAP_MIB[0], TAP_MIB[0] + TAP_MIB[1]))
    want_domu = 'XENBED-XVDD md5=%s' % hashlib.md5(data).hexdigest()
    want_image = 'XENBED-XVDD-IMAGE md5=%s' % hashlib.md5(
        bytes(b ^ TAP_KEY for b in data)).hexdigest()
    if want_domu not in domu:
        errors.append('xvdd: the domU did not verify its data through the '
                      'soft-device process (%s)'
                      % [t for t in domu if 'XVDD' in t])
    if want_image not in lines:
        errors.append('xvdd: the image does not hold the XORed data (%s)'
                      % [t for t in lines if 'XVDD-IMAGE' in t])
    info['tap_disk'] = want_domu in domu and want_image in lines


def unxor_copy(image, plan, out):
    """A copy of image with the planned regions XORed back with KEY."""
    shutil.copyfile(image, out)
    with open(out, 'r+b') as f:
        for start, n in plan:
            f.seek(start * MIB)
            data = f.read(n * MIB)
            f.seek(start * MIB)
            f.write(bytes(b ^ KEY for b in data))


def xl_config():
    """The domain config (docs/xen.rst shows it)."""
    return xenbed.domain_config(
        disks=[DISK_SPEC % ('xvda', 'rw, discard', '/dev/vda'),
               DISK_SPEC % ('xvdb', 'rw, discard', '/tmp/xvdb.img'),
               DISK_SPEC % ('xvdc', 'ro', '/tmp/xvdc.img'),
               DISK_SPEC % ('xvdd', 'rw', '/tmp/xvdd.img')],
        dm_args=['-object', json.dumps(XVDA_OBJECT),
                 '-object', json.dumps(XVDC_OBJECT),
                 '-object', json.dumps(XVDD_OBJECT)])


def main():
    ap = xenbed.test_arg_parser(__doc__, timeout=300)
    ap.add_argument('--workdir', help='keep the image and console log here')
    a = xenbed.parse_test_args(ap)
    if a.print_config:
        sys.stdout.write(xl_config())
        return 0
    work = a.workdir or tempfile.mkdtemp(prefix='xenbed-softdev-')
    os.makedirs(work, exist_ok=True)
    image = os.path.join(work, 'xvda.img')
    with open(image, 'wb') as f:
        f.truncate(DISK_MIB * MIB)
    stride = DISK_MIB // NREG
    plan = xenbed.disk_regions(ROUNDS, REG_MIB, stride, NREG)
    disk_sh = xenbed.DOMU_SH_LIB + xenbed.DISK_SCRIPT % {
        'rounds': ROUNDS, 'reg_mib': REG_MIB, 'stride': stride,
        'nreg': NREG}
    cfg = xl_config()
    errors, info = [], {}
    t0 = time.monotonic()
    log = os.path.join(work, 'console.log')
    # xvdd's soft-device process: libsoftdev's C XOR example, run in dom0
    xor_bin = xenbed.libsoftdev_example('xor', work)
    with xenbed.XenBed(a.qemu, a.bed_dir, xenbed.DOMU_SH_LIB + DOMU_SCRIPT,
                       cfg, dom0_script=DOM0_SCRIPT,
                       dom0_files={'/job/softdev-xor': xor_bin},
                       domu_files={'/job/disk.sh': disk_sh}, disk=image,
                       echo=a.verbose, log_path=log,
                       domu_timeout=int(a.timeout)) as bed:
        try:
            bed.wait_for(r'^\[domU\] XENBED-IO-START|^XENBED-DOM0-EXIT',
                         a.timeout)
            with bed.dm_qmp() as qmp:
                if any('XENBED-IO-START' in t for t in bed.domu_lines()):
                    live_cycles(bed, qmp, errors, info)
                bed.wait_for(r'^\[domU\] XENBED-HOLD|^XENBED-DOM0-EXIT',
                             a.timeout)
                if any('XENBED-HOLD' in t for t in bed.domu_lines()):
                    final_checks(qmp, errors, info)
                    check_tap_reconnects(bed, qmp, errors, info)
                else:
                    errors.append('the domU did not finish its I/O')
            rc = bed.run(a.timeout)
            if rc not in (0, 1):
                errors.append('dom0 job exit status %d' % rc)
            bed.wait_exit(60)
        except (TimeoutError, GuestError, QMPError, OSError) as e:
            errors.append('%s: %s' % (type(e).__name__, e))
        domu = bed.domu_lines()
        timings = bed.timings()
        check_xenstore(bed.lines(), errors, info)
        check_tap_disk(bed.lines(), domu, errors, info)
    print('test-xen-softdev: xvda backend keys: %s' % info.get('xs_backend'))
    print('test-xen-softdev: xvda frontend keys: %s'
          % info.get('xs_frontend'))
    for t in domu:
        if 'XENBED-ERROR' in t or 'XENBED-RESULT FAIL' in t:
            errors.append('domU: ' + t)
        if t.startswith('XENBED-FEATURES'):
            print('test-xen-softdev: ' + t)
    if not any('XENBED-SOFTDEV PASS' in t for t in domu):
        errors.append('the domU did not report XENBED-SOFTDEV PASS')
    regions = xenbed.guestbed.parse_regions(domu)
    if len(regions) != len(plan):
        errors.append('the domU reported %d regions, planned %d'
                      % (len(regions), len(plan)))
    if regions:
        plain = os.path.join(work, 'xvda-unxored.img')
        unxor_copy(image, plan, plain)
        errors += xenbed.check_disk_image(plain, regions, plan)
        # softdev-xor really stored something else than the pattern
        errors += ['raw image: region %d holds the plain pattern' % o
                   for o, _, m in regions
                   if not xenbed.guestbed.check_regions(image,
                                                        [(o, REG_MIB * MIB,
                                                          m)])]
        os.unlink(plain)
    for e in errors:
        print('ERROR: ' + e)
    print('test-xen-softdev: %s regions=%d live-cycles=%d tap-disk=%s '
          'tap=%s xvda-trace=%s xen=%s total=%.1fs timings=%s'
          % ('PASS' if not errors else 'FAIL', len(regions),
             len(info.get('live_ops', [])), info.get('tap_disk'),
             info.get('tap'),
             info.get('xvda_trace'),
             (info.get('xen') or {}).get('xvda-trace'),
             time.monotonic() - t0, timings))
    if errors:
        print('test-xen-softdev: console log %s' % log)
    elif not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not errors else 1


if __name__ == '__main__':
    sys.exit(main())
