#!/bin/sh
# /init of the reference Linux PV domU (Debian kernel + busybox): prints a banner on hvc0 and
# keeps a shell reading commands from the console, so the domain stays up until destroyed.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "linux-guest ready uptime=$(cut -d' ' -f1 /proc/uptime) mem=$(awk '/MemTotal/ {print $2 "kB"}' /proc/meminfo)" >/dev/hvc0
while true; do
    sh </dev/hvc0 >/dev/hvc0 2>&1
    sleep 1
done
