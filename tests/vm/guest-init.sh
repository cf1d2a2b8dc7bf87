#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# guest-init.sh — /init of the throwaway VM that tests/test-vm.cpp boots under
# QEMU (built into an initramfs by make-initramfs.sh). It turns the host's root,
# shared read-only over 9p, into a chroot with writable /tmp and /run, starts a
# private guest session bus and (optionally) the sidebus agent on the
# virtio-serial link, waits for the broker to own org.freedesktop.portal.Desktop
# through it, runs one client command and reports on the serial console:
#
#   SIDEBUS-INIT <uptime>           /init started (seconds since boot)
#   SIDEBUS-READY <uptime>          the portal name appeared on the guest bus
#   SIDEBUS-RESULT-BEGIN            the command's stdout and stderr
#   SIDEBUS-RESULT-END
#   SIDEBUS-EXIT <status> <uptime>  the command's exit status
#   SIDEBUS-ERROR <message>         the guest side itself failed (no EXIT follows)
#   SIDEBUS-LOG-BEGIN <name> / SIDEBUS-LOG-END <name>   guest daemon logs
#
# then powers off. Every step is bounded, and a watchdog powers off regardless.
#
# Kernel command line (dotted, so the kernel leaves them to us in /proc/cmdline):
#   sidebus.cmd=BASE64       client command, run with /bin/sh -c in the chroot
#   sidebus.agent=PATH       agent binary (host path); absent: no bus, no agent
#   sidebus.connect=ADDR     the agent's --connect (default
#                            virtio-serial:/dev/virtio-ports/dev.sidebus.link)
#   sidebus.wait=SECS        bound on waiting for the portal name and on the
#                            command (default 60 each)
#   sidebus.timeout=SECS     watchdog for the whole boot (default 150)
#   sidebus.docs=PATH        mount the virtiofs share tagged sidebus-docs
#                            (the broker's per-VM document view) at PATH
#   sidebus.docs-hotplug=PATH  the same, whenever the device appears (it is
#                            hot-plugged after a migration: QEMU 7.2 cannot
#                            migrate vhost-user-fs); prints
#                            SIDEBUS-DOCS-MOUNTED <uptime> then
#   sidebus.env=BASE64       NAME=VALUE words (no spaces in values) added to
#                            the environment of everything in the chroot,
#                            e.g. the sanitizer options of the test
#   sidebus.debug=1          G_MESSAGES_DEBUG=all for everything in the chroot
#
# The chroot is the host's root over 9p, or (when make-initramfs.sh was
# given the guest's programs: /etc/sidebus-self-contained) the copy of them
# in /host of the initramfs itself; QEMU cannot migrate a guest that has a
# 9p share mounted.
set -eu
PATH=/bin
export PATH

/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
dmesg -n 1 || true

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# alive PID: running, not a zombie the shell has yet to reap.
alive() {
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c 1)
    [ -n "$state" ] && [ "$state" != Z ]
}

finish() {
    sync
    poweroff -f
}

fail() {
    echo "SIDEBUS-ERROR $*"
    dump_logs
    finish
}

dump_logs() {
    for log in /host/tmp/sidebus-logs/*.log; do
        [ -f "$log" ] || continue
        name=$(basename "$log" .log)
        echo "SIDEBUS-LOG-BEGIN $name"
        cat "$log"
        [ -z "$(tail -c 1 "$log")" ] || echo
        echo "SIDEBUS-LOG-END $name"
    done
}

# set -e ends init on any unexpected failure; say so instead of panicking mutely.
trap 'status=$?; [ "$status" -eq 0 ] || fail "init failed (status $status)"' EXIT

cmd_b64=
agent=
connect=virtio-serial:/dev/virtio-ports/dev.sidebus.link
wait_s=60
timeout_s=150
debug=
docs=
docs_hotplug=
env_b64=
read -r cmdline </proc/cmdline
set -f
for arg in $cmdline; do
    case $arg in
        sidebus.cmd=*) cmd_b64=${arg#*=} ;;
        sidebus.agent=*) agent=${arg#*=} ;;
        sidebus.connect=*) connect=${arg#*=} ;;
        sidebus.wait=*) wait_s=${arg#*=} ;;
        sidebus.timeout=*) timeout_s=${arg#*=} ;;
        sidebus.debug=*) debug=${arg#*=} ;;
        sidebus.docs=*) docs=${arg#*=} ;;
        sidebus.docs-hotplug=*) docs_hotplug=${arg#*=} ;;
        sidebus.env=*) env_b64=${arg#*=} ;;
    esac
done
set +f

(sleep "$timeout_s"; echo "SIDEBUS-ERROR guest watchdog: no result after ${timeout_s}s"; dump_logs; finish) &

echo "SIDEBUS-INIT $(uptime_s)"

while read -r module; do
    insmod "/lib/modules/$module.ko" || fail "insmod $module"
done </etc/sidebus-modules

# The host root. Devices probe asynchronously after insmod: retry briefly.
if [ -e /etc/sidebus-self-contained ]; then
    mkdir -p /host/tmp /host/run /host/proc /host/sys /host/dev
else
    tries=0
    until mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 50 ] || fail "cannot mount the 9p host root (tag hostroot)"
        sleep 0.1
    done
fi

# The 9p root is read-only; give the chroot its own kernel filesystems and
# writable scratch space. Mounting over a directory needs no write access.
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
mount -t tmpfs -o mode=755 tmpfs /host/run
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/tmp/sidebus-logs /host/run/user/0
chmod 700 /host/run/user/0

# The documents the broker exports, where its --guest-documents-path says
# (under /run or /tmp: the rest of the chroot is read-only). virtiofs, not
# 9p: QEMU's 9p opens files with O_NOFOLLOW, which xdg-document-portal
# refuses (ELOOP), and statfs()es the export, which it refuses too (EPERM).
if [ -n "$docs" ]; then
    mkdir -p "/host$docs"
    mount -t virtiofs sidebus-docs "/host$docs" \
        || fail "cannot mount the document share (virtiofs tag sidebus-docs) at $docs"
fi

if [ -n "$docs_hotplug" ]; then
    mkdir -p "/host$docs_hotplug"
    (
        until mount -t virtiofs sidebus-docs "/host$docs_hotplug" 2>/dev/null; do sleep 0.2; done
        echo "SIDEBUS-DOCS-MOUNTED $(uptime_s)"
    ) &
fi

# No udev: name the virtio-serial ports the way udev's rules would. Ports
# appear asynchronously (the host announces them), so when the link is a
# virtio-serial port, wait for it; a boot without one moves on after 5 s.
name_ports() {
    for port in /sys/class/virtio-ports/*; do
        [ -f "$port/name" ] || continue
        name=$(cat "$port/name")
        [ -n "$name" ] || continue
        mkdir -p /dev/virtio-ports
        ln -sf "../$(basename "$port")" "/dev/virtio-ports/$name"
    done
}
case $connect in
    virtio-serial:*) port_path=${connect#virtio-serial:} ;;
    *) port_path= ;;
esac
tries=0
while :; do
    name_ports
    if [ -z "$port_path" ] || [ -e "$port_path" ]; then
        break
    fi
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || break
    sleep 0.1
done

extra_env=$(echo "$env_b64" | base64 -d) || fail "sidebus.env is not base64"

# in_host SECS COMMAND...: run COMMAND in the chroot with a clean environment
# pointing at the guest bus, killed after SECS.
in_host() {
    secs=$1
    shift
    set -f
    # shellcheck disable=SC2086 # extra_env is NAME=VALUE words
    timeout "$secs" chroot /host /usr/bin/env -i HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        XDG_RUNTIME_DIR=/run/user/0 DBUS_SESSION_BUS_ADDRESS=unix:path=/tmp/guest-bus \
        ${debug:+G_MESSAGES_DEBUG=all} $extra_env "$@"
    in_host_status=$?
    set +f
    return $in_host_status
}

if [ -n "$agent" ]; then
    # A session bus without the host's service directories: nothing in the
    # guest may be activated as org.freedesktop.portal.Desktop (the host's
    # xdg-desktop-portal would be), so whoever owns it came over the link.
    cat >/host/tmp/guest-bus.conf <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=/tmp/guest-bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
    in_host 30 dbus-daemon --config-file=/tmp/guest-bus.conf --fork --print-address=1 \
        >/host/tmp/sidebus-logs/dbus-daemon.log 2>&1 \
        || fail "guest dbus-daemon did not start"

    in_host "$timeout_s" "$agent" --connect "$connect" >/host/tmp/sidebus-logs/agent.log 2>&1 &
    agent_pid=$!

    # Wait for the name, but give up at once if the agent dies first.
    in_host $((wait_s + 5)) gdbus wait --session --timeout "$wait_s" org.freedesktop.portal.Desktop \
        >>/host/tmp/sidebus-logs/wait.log 2>&1 &
    waiter_pid=$!
    while alive "$waiter_pid"; do
        if ! alive "$agent_pid"; then
            agent_status=0
            wait "$agent_pid" || agent_status=$?
            fail "the agent exited (status $agent_status) before org.freedesktop.portal.Desktop appeared"
        fi
        sleep 0.2
    done
    wait "$waiter_pid" || fail "org.freedesktop.portal.Desktop did not appear on the guest bus within ${wait_s}s"
    echo "SIDEBUS-READY $(uptime_s)"
fi

cmd=$(echo "$cmd_b64" | base64 -d) || fail "sidebus.cmd is not base64"
status=0
in_host "$wait_s" /bin/sh -c "$cmd" >/host/tmp/result 2>&1 </dev/null || status=$?
echo "SIDEBUS-RESULT-BEGIN"
cat /host/tmp/result
[ -z "$(tail -c 1 /host/tmp/result)" ] || echo
echo "SIDEBUS-RESULT-END"
echo "SIDEBUS-EXIT $status $(uptime_s)"
dump_logs
trap - EXIT
finish
