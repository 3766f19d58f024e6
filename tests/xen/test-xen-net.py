#!/usr/bin/python3
"""
Xen test: under QEMU/TCG, Xen 4.17's dom0 `xl create`s a PV domU whose NIC
is QEMU's xen-net-device (backend "qnic") in our QEMU, the device model,
with a user (slirp) netdev: xl's vif= is not used (it would be the kernel's
netback).  The domU's xen-netfront eth0 downloads a file from busybox
httpd in dom0 (slirp's host address 10.0.2.2 is dom0's loopback) and
uploads another through a CGI script; both sides check md5 sums against
the ones the host computed.  libxl starts a device model for a PV domain
only when a device needs one: by default the domU also gets a small qdisk
disk (a file in dom0); --trigger channel uses a console channel instead
(libxl then logs "Primary console has invalid configuration", harmlessly),
which keeps the block layer out of this test.  The domU also has a PV USB
controller (usbctrl type qusb): QEMU's backend must come up and wait for a
frontend, and the domU, whose kernel has no PV USB frontend, must list the
device with no driver (docs/xen.rst, PV USB).  A second disk, xvdb, has a
soft device that cannot open (a softdev-tap with no process behind its
socket): it must fail alone, with the reason in the device model's log,
and be missing in the domU while everything else works.

Usage: test-xen-net.py --qemu QEMU --bed-dir OUTDIR_OF_build-xen-bed.sh
       test-xen-net.py --print-config

SPDX-License-Identifier: GPL-2.0-or-later
"""

import hashlib
import json
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import xenbed  # noqa: E402
import guestbed  # noqa: E402

MAC = '00:16:3e:5a:00:01'
# A PV USB controller served by QEMU (qusb); see docs/xen.rst, PV USB.
USBCTRL = 'usbctrl = [ "type=qusb, version=2, ports=4" ]'
# xvdb's soft device cannot open (no process listens on its socket): that
# disk must fail alone, with a clear error in the device model's log,
# while the NIC and xvda work.
BROKEN_OBJECT = {
    'qom-type': 'softdev-xen-disk', 'id': 'sd-broken', 'vdev': 'xvdb',
    'chain': [{'driver': 'softdev-tap',
               'server': {'type': 'unix', 'path': '/run/softdev/none.sock'}}]}
BROKEN_ERROR = (r"failed to attach soft devices: soft device 0 of disk xvdb "
                r"of domain \d+ \(object 'sd-broken'\): softdev-tap: cannot "
                r"reach the soft-device process")
HTTP_PORT = 8080

DOM0_SCRIPT = r'''
xenbed_pre() {
    mkdir -p /srv/www/cgi-bin
    cp /job/down.bin /srv/www/down.bin
    cat >/srv/www/cgi-bin/up <<'EOF_CGI'
#!/bin/sh
head -c "$CONTENT_LENGTH" >/srv/up.bin
echo "Content-Type: text/plain"
echo
set -- $(md5sum </srv/up.bin)
echo "$1 $(stat -c %%s /srv/up.bin)"
EOF_CGI
    chmod 755 /srv/www/cgi-bin/up
    httpd -p %(port)d -h /srv/www || return 1
    # For --trigger disk: a qdisk makes libxl start the device model.
    dd if=/dev/zero of=/tmp/dummy.img bs=1M count=8 status=none
    dd if=/dev/zero of=/tmp/broken.img bs=1M count=8 status=none
    { usb_report & }
}
# PV USB: QEMU's qusb backend for the domU's usbctrl; the domU kernel has no
# frontend (CONFIG_USB_XEN_HCD is not set in Debian's), so the backend
# waits (state 2, InitWait) and the frontend never initialises.
usb_report() {
    t=0
    while [ $t -lt 180 ]; do
        d=$(domid_of %(name)s)
        be=$(xenstore-read /local/domain/0/backend/qusb/$d/0/state 2>/dev/null)
        if [ -n "$d" ] && [ "$be" = 2 ]; then
            echo "XENBED-USB be-state=$(xenstore-read /local/domain/0/backend/qusb/$d/0/state)" \
                 "fe-state=$(xenstore-read /local/domain/$d/device/vusb/0/state)" \
                 "ports=$(xenstore-read /local/domain/0/backend/qusb/$d/0/num-ports)" \
                 "usb-ver=$(xenstore-read /local/domain/0/backend/qusb/$d/0/usb-ver)"
            return
        fi
        sleep 1
        t=$((t + 1))
    done
    echo "XENBED-USB timeout be-state=$be"
}
xenbed_post() {
    [ -f /srv/up.bin ] || { echo "XENBED-DOM0-UPLOAD none"; return 1; }
    set -- $(md5sum </srv/up.bin)
    echo "XENBED-DOM0-UPLOAD md5=$1 bytes=$(stat -c %%s /srv/up.bin)"
    [ "$1" = "%(up_md5)s" ]
}
'''

DOMU_SCRIPT = r'''
ERR=0
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do
    usleep 100000; i=$((i + 1))
done
[ -e /sys/class/net/eth0 ] || { echo "XENBED-RESULT FAIL no eth0"; exit 1; }
echo "XENBED-NET mac=$(cat /sys/class/net/eth0/address)"
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "XENBED-NET-CONFIGURED uptime=$(cut -d' ' -f1 /proc/uptime)"

URL=http://10.0.2.2:%(port)d
# (no wget -T: busybox 1.35's wget segfaults with it)
t0=$(cut -d' ' -f1 /proc/uptime)
if wget -q -O /tmp/down $URL/down.bin 2>/tmp/wget.err; then
    got=$(md5_of /tmp/down)
    echo "XENBED-NET-DOWNLOAD md5=$got bytes=$(stat -c %%s /tmp/down) start=$t0 end=$(cut -d' ' -f1 /proc/uptime)"
    [ "$got" = "%(down_md5)s" ] || { echo "XENBED-ERROR download md5 $got"; ERR=$((ERR + 1)); }
else
    echo "XENBED-ERROR download: $(head -n 1 /tmp/wget.err)"
    ERR=$((ERR + 1))
fi

: >/tmp/up
i=0
while [ $i -lt %(up_mib)d ]; do
    pattern_block $i && cat /tmp/pat >>/tmp/up
    i=$((i + 1))
done
t0=$(cut -d' ' -f1 /proc/uptime)
if wget -q -O /tmp/resp --post-file /tmp/up $URL/cgi-bin/up \
        2>/tmp/wget.err; then
    echo "XENBED-NET-UPLOAD sent=$(md5_of /tmp/up) dom0-says=$(cat /tmp/resp) start=$t0 end=$(cut -d' ' -f1 /proc/uptime)"
    [ "$(cat /tmp/resp)" = "%(up_md5)s $(stat -c %%s /tmp/up)" ] ||
        { echo "XENBED-ERROR upload"; ERR=$((ERR + 1)); }
else
    echo "XENBED-ERROR upload: $(head -n 1 /tmp/wget.err)"
    ERR=$((ERR + 1))
fi
# xvda is there, xvdb (whose soft device could not open) is not.
echo "XENBED-DISKS xvda=$([ -b /dev/xvda ] && echo 1 || echo 0)" \
     "xvdb=$([ -b /dev/xvdb ] && echo 1 || echo 0)"
# PV USB: xenbus shows the usbctrl's device, no driver takes it.
if [ -e /sys/bus/xen/devices/vusb-0 ]; then
    drv=none
    [ -e /sys/bus/xen/devices/vusb-0/driver ] &&
        drv=$(basename "$(readlink /sys/bus/xen/devices/vusb-0/driver)")
    echo "XENBED-USB-DOMU device=vusb-0 driver=$drv"
else
    echo "XENBED-USB-DOMU device=none"
fi
if [ $ERR -eq 0 ]; then
    echo "XENBED-RESULT PASS"
    exit 0
fi
echo "XENBED-RESULT FAIL errors=$ERR"
exit 1
'''


def xl_config(trigger='disk'):
    """The domain config (docs/xen.rst shows the default one)."""
    if trigger == 'disk':
        disks, more = [xenbed.qdisk('/tmp/dummy.img')], []
    else:
        disks, more = [], ['channel = [ "connection=socket, '
                           'path=/tmp/xenbed-channel.sock, '
                           'name=org.softdev.xenbed" ]']
    return xenbed.domain_config(
        disks=disks + [xenbed.qdisk('/tmp/broken.img', 'xvdb')],
        more=more + [USBCTRL],
        dm_args=['-netdev', 'user,id=n0',
                 '-device', 'xen-net-device,netdev=n0,mac=%s' % MAC,
                 '-object', json.dumps(BROKEN_OBJECT)])


def main():
    ap = xenbed.test_arg_parser(__doc__, timeout=230)
    ap.add_argument('--mib', type=int, default=4,
                    help='MiB to transfer each way (default 4)')
    ap.add_argument('--trigger', choices=['disk', 'channel'],
                    default='disk',
                    help='the device that makes libxl start the device '
                         'model (default: a qdisk disk)')
    ap.add_argument('--log', help='console log file')
    a = xenbed.parse_test_args(ap)
    if a.print_config:
        sys.stdout.write(xl_config(a.trigger))
        return 0

    down = random.Random(1).randbytes(a.mib * xenbed.MIB)
    down_md5 = hashlib.md5(down).hexdigest()
    up_md5 = hashlib.md5(b''.join(guestbed.pattern_block(i)
                                  for i in range(a.mib))).hexdigest()
    cfg = xl_config(a.trigger)
    dom0 = DOM0_SCRIPT % {'port': HTTP_PORT, 'up_md5': up_md5,
                          'name': xenbed.DOMU_NAME}
    domu = xenbed.DOMU_SH_LIB + DOMU_SCRIPT % {
        'port': HTTP_PORT, 'down_md5': down_md5, 'up_md5': up_md5,
        'up_mib': a.mib}
    errors = []
    info = {}

    def on_net(bed):
        with bed.dm_qmp() as qmp:
            info['network'] = qmp.hmp('info network').strip()
        print('test-xen-net: device model "info network":\n  %s'
              % info['network'].replace('\n', '\n  '), flush=True)

    t0 = time.monotonic()
    with xenbed.XenBed(a.qemu, a.bed_dir, domu, cfg, dom0_script=dom0,
                       dom0_files={'/job/down.bin': down},
                       log_path=a.log, echo=a.verbose) as bed:
        try:
            rc = bed.run(a.timeout, marker=r'^\[domU\] XENBED-NET-CONFIGURED',
                         callback=on_net)
            if rc != 0:
                errors.append('dom0 job exit status %d' % rc)
            bed.wait_exit(60)
        except (TimeoutError, xenbed.GuestError, xenbed.QMPError,
                OSError) as e:
            errors.append('%s: %s' % (type(e).__name__, e))
        lines = bed.lines()
        domu_lines = bed.domu_lines()
        timings = bed.timings()
        dm_log = bed.dm_lines()
        log = bed.log_path
    if not any('XENBED-RESULT PASS' in t for t in domu_lines):
        errors.append('the domU did not report XENBED-RESULT PASS')
    for t in domu_lines:
        if 'XENBED-ERROR' in t or 'XENBED-RESULT FAIL' in t:
            errors.append('domU: ' + t)
    if not any(re.search(r'^XENBED-DOM0-UPLOAD md5=%s bytes=%d$'
                         % (up_md5, a.mib * xenbed.MIB), t) for t in lines):
        errors.append('dom0 did not receive the upload intact')
    # a disk whose soft device cannot open fails alone, and says why
    want = 'XENBED-DISKS xvda=%d xvdb=0' % (a.trigger == 'disk')
    if want not in domu_lines:
        errors.append('domU disks: %s, want %r' % (
            [t for t in domu_lines if t.startswith('XENBED-DISKS')], want))
    if not any(re.search(BROKEN_ERROR, t) for t in dm_log):
        errors.append('no error for xvdb in the device model log')
    # PV USB: QEMU's backend is up, the domU has no frontend for it
    if 'XENBED-USB be-state=2 fe-state=1 ports=4 usb-ver=2' not in lines:
        errors.append('qusb backend: %s' % [t for t in lines
                                            if t.startswith('XENBED-USB')])
    if 'XENBED-USB-DOMU device=vusb-0 driver=none' not in domu_lines:
        errors.append('domU PV USB: %s' % [t for t in domu_lines
                                           if t.startswith('XENBED-USB')])
    if 'xen-net-device' not in info.get('network', '') and \
            'n0' not in info.get('network', ''):
        errors.append('no "info network" from the device model')
    speed = {}
    for kind in ('DOWNLOAD', 'UPLOAD'):
        for t in domu_lines:
            m = re.search(r'XENBED-NET-%s .*start=([\d.]+) end=([\d.]+)'
                          % kind, t)
            if m:
                speed[kind.lower()] = '%.1fs' % (float(m.group(2)) -
                                                 float(m.group(1)))
    for e in errors:
        print('ERROR: ' + e)
    if errors:
        for t in dm_log:
            print('test-xen-net: device model: ' + t)
    if errors and a.log:
        print('test-xen-net: console log %s' % log)
    print('test-xen-net: %s mib=%d transfer=%s total=%.1fs timings=%s'
          % ('PASS' if not errors else 'FAIL', a.mib, speed,
             time.monotonic() - t0, timings))
    return 0 if not errors else 1


if __name__ == '__main__':
    sys.exit(main())
