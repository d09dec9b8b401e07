#!/bin/sh
# /init of the reference Linux PV domU (Debian kernel + busybox): prints a banner on hvc0, loads
# its PV frontends (xen-blkfront, xen-netfront), gives eth0 its address (ip=ADDR/LEN on the kernel
# command line, default 10.0.0.2/24), lists its disks, and keeps a shell reading commands from the
# console, so the domain stays up until destroyed. Disks and vifs attached or detached later are
# reported on hvc0 ("linux-guest uevent: ..."), and an eth0 that comes back is configured again.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# net_up: eth0 gets the address and comes up; one line on hvc0 when it got the address (the boot
# path and the uevent path may both try)
net_up() {
    addr=10.0.0.2/24
    for w in $(cat /proc/cmdline); do
        case $w in ip=*/*) addr=${w#ip=} ;; esac
    done
    ip link set eth0 up 2>/dev/null
    ip addr add "$addr" dev eth0 2>/dev/null &&
        echo "linux-guest net: eth0 $addr up mac=$(cat /sys/class/net/eth0/address)" >/dev/hvc0
}

# Run by busybox `uevent` once per kernel event, with the event's variables in the environment.
if [ "$1" = lab-uevent ]; then
    case $ACTION:$SUBSYSTEM:$DEVNAME$INTERFACE in
    add:block:xvd*)
        echo "linux-guest uevent: add $DEVNAME $(cat "/sys/block/$DEVNAME/size") sectors" >/dev/hvc0 ;;
    remove:block:xvd*)
        echo "linux-guest uevent: remove $DEVNAME" >/dev/hvc0 ;;
    add:net:eth* | remove:net:eth*)
        echo "linux-guest uevent: $ACTION $INTERFACE" >/dev/hvc0
        [ "$ACTION:$INTERFACE" = add:eth0 ] && net_up ;;
    esac
    exit 0
fi

mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "linux-guest ready uptime=$(cut -d' ' -f1 /proc/uptime) mem=$(awk '/MemTotal/ {print $2 "kB"}' /proc/meminfo)" >/dev/hvc0

uevent /init lab-uevent &
for m in xen-blkfront xen-netfront; do
    insmod "/lib/modules/$m.ko" || echo "linux-guest: insmod $m failed" >/dev/hvc0
done
# blkfront connects its disks after insmod returns: wait (at most 10 s) until every vbd the
# domain has shows in /proc/partitions, and eth0 if it has a vif
vbds=$(ls -d /sys/bus/xen/devices/vbd-* 2>/dev/null | wc -l)
n=0
while [ "$(grep -c ' xvd[a-z]*$' /proc/partitions)" -lt "$vbds" ] ||
    { [ -e /sys/bus/xen/devices/vif-0 ] && [ ! -e /sys/class/net/eth0 ]; }; do
    n=$((n + 1)); [ $n -gt 50 ] && break
    sleep 0.2
done
[ -e /sys/class/net/eth0 ] && net_up
echo "linux-guest disks: $(awk '$4 ~ /^xvd[a-z]+$/ { printf "%s=%sKiB ", $4, $3 }' /proc/partitions)(of $vbds vbds, uptime=$(cut -d' ' -f1 /proc/uptime))" >/dev/hvc0
while true; do
    sh </dev/hvc0 >/dev/hvc0 2>&1
    sleep 1
done
