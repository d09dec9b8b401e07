#!/bin/sh
# /init of the lab's dom0 initramfs (busybox ash). Brings up the Xen toolstack, runs the
# per-boot scenarios from the overlay (/lab/run-scenarios.sh) and powers the machine off.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "@@LAB $*"; }
die() {
    say "FATAL $*"
    dmesg | tail -n 30 | sed 's/^/[dmesg] /'
    sync; poweroff -f; echo o >/proc/sysrq-trigger; sleep 30
}

say "dom0 init start uptime=$(up)"
for m in $(cat /lib/modules/xen.list) $(cat /lib/modules/virtio.list) $(cat /lib/modules/pv.list); do
    insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done
dmesg -n 1
# Guests' vifs join xenbr0 (the lab's hotplug script /lab/hotplug/vif adds them); dom0 is
# 10.0.0.1 on it. A new bridge runs no STP, so a vif forwards as soon as it joins.
{ brctl addbr xenbr0 && ip addr add 10.0.0.1/24 dev xenbr0 && ip link set xenbr0 up; } ||
    say "bridge xenbr0 failed"
# /tmp (save images) and /disks (disk images on loop devices) get a tmpfs each: the rootfs is
# capped at half of dom0's RAM and holds the initramfs (~120 MiB with the Linux guest), which left
# /tmp ~200 MiB, too little for a 256 MiB save image.
mount -t tmpfs -o size=50% tmpfs /tmp || say "cannot mount /tmp"
mount -t tmpfs -o size=50% tmpfs /disks || say "cannot mount /disks"
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || die "cannot mount xenfs"
mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/xenstored

xenstored --pid-file /run/xenstored.pid || die "xenstored failed"
n=0
until xenstore-exists / 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 100 ] && die "xenstored does not answer"
    sleep 0.1
done
xen-init-dom0 || die "xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file=/run/xen/xenconsoled.pid ||
    die "xenconsoled failed"
say "dom0 ready uptime=$(up) mem=$(awk '/MemTotal/ {print $2 "kB"}' /proc/meminfo) $(xl info 2>&1 | awk '/^xen_version|^total_memory|^free_memory/ {printf "%s=%s ", $1, $3}')"

if [ -x /lab/run-scenarios.sh ]; then
    /lab/run-scenarios.sh
else
    say "no /lab/run-scenarios.sh in the initramfs"
fi

say "poweroff uptime=$(up)"
sync
poweroff -f
echo o >/proc/sysrq-trigger
sleep 30
