#!/usr/bin/python3
"""
Xen test: a soft device in a driver domain.  Under QEMU/TCG, Xen 4.17's
dom0 creates two PV domUs.  The driver domain ("xenbed-devd-N") runs
libsoftdev's C XOR example, listening on TCP port 10809 of its PV NIC; its
device model (our QEMU) serves that NIC with a user-mode netdev that
forwards dom0's 127.0.0.1:10809 to it.  The first domU's disk xvda (a
qdisk, dom0's /dev/vda, the host's image) has a softdev-tap soft device
(softdev-xen-disk object) that reaches the driver domain over that port,
with on-disconnect=queue: the guest's disk is served by a soft device
isolated in a VM of its own.  While the domU writes and re-reads its
disk, dom0 destroys the driver domain (xl destroy) and creates it again;
the domU must see no I/O error, verify every round, and finish rounds
after the driver domain is back; softdev-tap must have reconnected, with
no request failed or timed out; the image must hold the domU's data XOR
the key.

Usage: test-xen-driver-domain.py --qemu QEMU --bed-dir OUTDIR
       test-xen-driver-domain.py --print-config

SPDX-License-Identifier: GPL-2.0-or-later
"""

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import xenbed  # noqa: E402
import guestbed  # noqa: E402

KEY = 0x5a
PORT = 10809
MIB = 1 << 20
CHUNK_KIB, ROUNDS, PAUSE_S = 128, 8, 8
DEVD = 'xenbed-devd'
DEVD_MAC = '00:16:3e:5a:00:02'

# xvda's soft device, as a user writes it in xl.cfg's device_model_args:
# a soft-device process in the driver domain, over TCP.
XVDA_OBJECT = {
    'qom-type': 'softdev-xen-disk', 'id': 'sd-xvda', 'vdev': 'xvda',
    'chain': [{'driver': 'softdev-tap', 'on-disconnect': 'queue',
               'timeout': 300, 'reconnect-delay': 1,
               'server': {'type': 'inet', 'host': '127.0.0.1',
                          'port': str(PORT)}}]}


def devd_config():
    """The driver domain: a PV NIC served by its device model (a
    user-mode netdev forwarding dom0's 127.0.0.1:PORT to it), and a small
    disk, without which libxl starts no device model."""
    return xenbed.domain_config(
        name=DEVD + '-0', memory=128, qmp=False, extra='xenbed.role=devd',
        disks=[xenbed.qdisk('/tmp/devd.img')],
        dm_args=['-netdev', 'user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d'
                 % (PORT, PORT),
                 '-device', 'xen-net-device,netdev=n0,mac=%s' % DEVD_MAC])


def domu_config():
    return xenbed.domain_config(
        disks=[xenbed.qdisk('/dev/vda')], extra='xenbed.dev=/dev/xvda',
        dm_args=['-object', json.dumps(XVDA_OBJECT)])


# dom0: the driver domain first (the soft device must listen before the
# domU's disk opens); then, once the domU does I/O, destroy it and create
# it again under a new name (a fresh console log).
DOM0_SCRIPT = r'''
# devd_create N: create driver domain N, wait until its device listens
devd_create() {
    truncate -s 1M /tmp/devd.img
    xl create /job/devd.cfg 'name="%(devd)s-'$1'"' >/tmp/xl-devd.log 2>&1
    rc=$?
    dump /tmp/xl-devd.log xl-devd
    [ $rc -eq 0 ] || return 1
    { follow_console /var/log/xen/console/guest-%(devd)s-$1.log devd$1 & }
    i=0
    while ! grep -q XENBED-DEVD-LISTENING \
            /var/log/xen/console/guest-%(devd)s-$1.log 2>/dev/null; do
        [ $i -lt 1200 ] || { echo "XENBED-DEVD-NOT-LISTENING $1"; return 1; }
        usleep 100000
        i=$((i + 1))
    done
    echo "XENBED-DEVD-UP $1 uptime=$(up)"
}
# port_listening: dom0's 127.0.0.1:PORT has a listener (the hostfwd of a
# driver domain's device model)
port_listening() {
    grep -q "0100007F:%(port_hex)s 00000000:0000 0A" /proc/net/tcp
}
devd_chaos() {
    i=0
    while ! grep -q "XENBED-ROUND 1 done" $LOG 2>/dev/null &&
          [ $i -lt 1200 ]; do
        usleep 500000
        i=$((i + 1))
    done
    sleep 2
    echo "XENBED-DEVD-DESTROY uptime=$(up)"
    xl destroy %(devd)s-0 2>&1 | sed 's/^/[xl-destroy] /'
    i=0
    while { domid_of %(devd)s-0 >/dev/null || port_listening; } &&
          [ $i -lt 60 ]; do
        sleep 1
        i=$((i + 1))
    done
    dump /var/log/xen/qemu-dm-%(devd)s-0.log qemu-dm-devd0
    echo "XENBED-DEVD-GONE uptime=$(up)"
    devd_create 1 && echo "XENBED-DEVD-RECREATED uptime=$(up)"
}
xenbed_pre() {
    devd_create 0 || return 1
    { devd_chaos & }
}
xenbed_post() {
    xl destroy %(devd)s-1 >/dev/null 2>&1
    dump /var/log/xen/qemu-dm-%(devd)s-1.log qemu-dm-devd1
    :
}
''' % {'devd': DEVD, 'port_hex': '%04X' % PORT}

# Both domUs run /job/domu.sh: the driver domain serves the soft device,
# the other one writes and re-reads its disk, a chunk a round, with pauses
# so that rounds come before, during and after the driver domain's
# absence.
DOMU_SCRIPT = r'''
case " $(cat /proc/cmdline) " in
*" xenbed.role=devd "*)
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do
        usleep 100000; i=$((i + 1))
    done
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    chmod 755 /job/softdev-xor
    /job/softdev-xor --tcp :%(port)d key=%(key)#x &
    i=0
    while ! grep -q ":%(port_hex)s 00000000:0000 0A" /proc/net/tcp &&
          [ $i -lt 100 ]; do
        usleep 100000; i=$((i + 1))
    done
    echo "XENBED-DEVD-LISTENING uptime=$(cut -d' ' -f1 /proc/uptime)"
    wait
    exit 1
    ;;
esac
ERR=0
fail() { echo "XENBED-ERROR $*"; ERR=$((ERR + 1)); }
[ -b /dev/xvda ] || { echo "XENBED-RESULT FAIL no /dev/xvda"; exit 1; }
echo "XENBED-IO-START uptime=$(cut -d' ' -f1 /proc/uptime)"
: >/tmp/d
r=0
while [ $r -lt %(rounds)d ]; do
    pattern_block $r || fail "pattern $r"
    head -c %(chunk)d /tmp/pat >/tmp/chunk
    dd if=/tmp/chunk of=/dev/xvda bs=%(chunk)d seek=$r conv=notrunc,fsync \
        status=none || fail "write of round $r failed"
    cat /tmp/chunk >>/tmp/d
    echo 3 >/proc/sys/vm/drop_caches
    dd if=/dev/xvda of=/tmp/r bs=%(chunk)d count=$((r + 1)) iflag=direct \
        status=none || fail "read of round $r failed"
    [ "$(md5_of /tmp/r)" = "$(md5_of /tmp/d)" ] ||
        fail "round $r read back differs"
    echo "XENBED-ROUND $r done uptime=$(cut -d' ' -f1 /proc/uptime)"
    r=$((r + 1))
    sleep %(pause)d
done
echo "XENBED-DATA md5=$(md5_of /tmp/d)"
echo "XENBED-HOLD"
sleep 10
[ $ERR -eq 0 ] || { echo "XENBED-RESULT FAIL errors=$ERR"; exit 1; }
echo "XENBED-DRIVER-DOMAIN PASS"
exit 0
''' % {'port': PORT, 'port_hex': '%04X' % PORT, 'key': KEY,
       'rounds': ROUNDS, 'chunk': CHUNK_KIB * 1024, 'pause': PAUSE_S}


def expected_image():
    data = b''.join(guestbed.pattern_block(r)[:CHUNK_KIB * 1024]
                    for r in range(ROUNDS))
    return bytes(b ^ KEY for b in data)


def check(qmp, errors, info):
    entries = {e['node-name']: e for e in qmp.cmd('query-softdevs')}
    tap = entries.get('xvda-softdev0')
    if not tap:
        errors.append('xvda-softdev0 not in query-softdevs: %s'
                      % sorted(entries))
        return
    info['tap'] = {k: tap[k] for k in ('connected', 'disconnects',
                                       'reconnects', 'timeouts',
                                       'replayed')}
    if tap['reconnects'] < 1 or not tap['connected']:
        errors.append('softdev-tap did not reconnect: %s' % info['tap'])
    if tap['timeouts']:
        errors.append('softdev-tap timed out: %s' % info['tap'])
    failed = sum(st['errors'] for st in tap['stats'])
    if failed:
        errors.append('%d requests failed at softdev-tap' % failed)


def main():
    ap = xenbed.test_arg_parser(__doc__, timeout=600)
    ap.add_argument('--workdir', help='keep the image and console log here')
    a = xenbed.parse_test_args(ap)
    if a.print_config:
        sys.stdout.write('# the driver domain (devd.cfg)\n' + devd_config() +
                         '# the guest\n' + domu_config())
        return 0
    work = a.workdir or tempfile.mkdtemp(prefix='xenbed-devd-')
    os.makedirs(work, exist_ok=True)
    image = os.path.join(work, 'xvda.img')
    with open(image, 'wb') as f:
        f.truncate(64 * MIB)
    errors, info = [], {}
    t0 = time.monotonic()
    with xenbed.XenBed(a.qemu, a.bed_dir, xenbed.DOMU_SH_LIB + DOMU_SCRIPT,
                       domu_config(), dom0_script=DOM0_SCRIPT,
                       dom0_files={'/job/devd.cfg': devd_config()},
                       domu_files={'/job/softdev-xor': xenbed.libsoftdev_example(
                           'xor', work, static=True)},
                       disk=image, echo=a.verbose,
                       log_path=os.path.join(work, 'console.log'),
                       domu_timeout=int(a.timeout)) as bed:
        bed.finish('XENBED-HOLD', lambda qmp: check(qmp, errors, info),
                   a.timeout, errors, 'the domU did not finish its I/O')
        lines = bed.lines()
        domu = bed.domu_lines()
    for t in domu:
        if 'XENBED-ERROR' in t or 'XENBED-RESULT FAIL' in t:
            errors.append('domU: ' + t)
    if not any('XENBED-DRIVER-DOMAIN PASS' in t for t in domu):
        errors.append('the domU did not pass')
    recreated = [i for i, t in enumerate(lines)
                 if t.startswith('XENBED-DEVD-RECREATED')]
    destroyed = [i for i, t in enumerate(lines)
                 if t.startswith('XENBED-DEVD-DESTROY')]
    rounds = [i for i, t in enumerate(lines) if 'XENBED-ROUND' in t]
    if not recreated or not destroyed:
        errors.append('dom0 did not destroy and re-create the driver domain')
    else:
        before = sum(i < destroyed[0] for i in rounds)
        after = sum(i > recreated[0] for i in rounds)
        info['rounds'] = (before, len(rounds) - before - after, after)
        if not before or not after:
            errors.append('rounds before/during/after the driver domain\'s '
                          'absence: %s' % (info['rounds'],))
    with open(image, 'rb') as f:
        got = f.read(ROUNDS * CHUNK_KIB * 1024)
    if got != expected_image():
        errors.append('the image does not hold the domU\'s data XOR %#x'
                      % KEY)
    print('test-xen-driver-domain: softdev-tap %s; rounds before/during/'
          'after the driver domain\'s absence %s; %.0f s'
          % (info.get('tap'), info.get('rounds'), time.monotonic() - t0))
    return guestbed.report(errors)


if __name__ == '__main__':
    sys.exit(main())
