#!/bin/sh
# Runs the scenarios named in /lab/scenarios.list (one "NAME TIMEOUT_SECONDS" per line) in order,
# each in its own shell under a timeout, framed by @@BEGIN/@@END. Between scenarios every domU
# is destroyed and the guest console logs are cleared, so each scenario starts from a clean host.
cd /lab || exit 1
dmesg -c >/dev/null 2>&1
cleanup() {
    for d in $(xl list 2>/dev/null | awk 'NR > 1 && $2 != 0 { print $1 }'); do
        echo "@@LAB cleanup: destroying leftover domain $d"
        xl destroy "$d" 2>&1 | sed 's/^/[xl] /'
    done
    rm -f /var/log/xen/console/guest-*.log
}
while read -r name tmo; do
    [ -n "$name" ] || continue
    echo "@@BEGIN $name"
    t0=$(awk '{ printf "%d", $1 * 1000 }' /proc/uptime)
    SCENARIO=$name timeout "${tmo:-60}" sh "/lab/scenarios/$name.sh" </dev/null 2>&1
    rc=$?
    t1=$(awk '{ printf "%d", $1 * 1000 }' /proc/uptime)
    [ $rc -eq 143 ] && echo "@@LAB $name: killed by the in-dom0 timeout (${tmo:-60} s)"
    dmesg -c 2>/dev/null | grep -E 'segfault|general protection|traps:|BUG|Oops' | sed 's/^/[dmesg] /'
    echo "@@END $name rc=$rc ms=$((t1 - t0))"
    cleanup
done </lab/scenarios.list
echo "@@ALLDONE"
