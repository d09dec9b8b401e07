#!/bin/sh
# ballastd makes room for a new domain. Three ballast guests with maxmem 512 MiB on a host with room
# for about two at full size: they publish data/meminfo (which agrees with Xen), the daemon shares
# the host between them, `ballastd reserve 512` squeezes them (never below their minimum) and
# returns once 512 MiB are free, and `xl create` of a fourth guest of 512 MiB succeeds; the daemon
# then drops the reservation and shares the host among the four. An impossible reservation fails
# with how much could be freed. Every guest keeps its memory pattern.
# needs: ballast
# timeout: 480
. /lab/lib.sh
OURS="b1 b2 b3 b4"
IMAGES=
trap _scenario_exit EXIT

for d in b1 b2 b3; do ballast_guest $d 320 512 || exit 1; done
log "three guests at 320 MiB: host free $(host_free_mib) MiB"

# data/meminfo: every figure there, total_kb what Xen counts (within 1 MiB), the parts adding up.
# The figures are read one by one while the guest may publish a new set (one transaction each), so
# a read that straddles two sets is read again (up to 5 times).
meminfo_sum() { # DOM: the parts' sum (or "bad") in $sum, total_kb in $tot
    tot=$(xs_wait_uint $1 data/meminfo/total_kb 10)
    sum=0
    for f in free_kb kernel_kb heap_kb task_stacks_kb page_tables_kb task_pages_kb; do
        v=$(xs_read $1 data/meminfo/$f); is_uint "$v" || { sum=bad; break; }
        sum=$(( sum + v ))
    done
    [ "$sum" = "$tot" ]
}
for d in b1 b2 b3; do
    n=0; until meminfo_sum $d || [ $n -ge 4 ]; do n=$((n + 1)); sleep 0.3; done
    xm=$(xl_mem_of $d)
    dd=$(( xm - tot / 1024 )); [ $dd -lt 0 ] && dd=$(( -dd ))
    if is_uint "$tot" && [ $dd -le 1 ] && [ "$sum" = "$tot" ]; then
        pass meminfo-$d "total_kb=$tot (xl list $xm MiB) = free+kernel+heap+stacks+tables+task pages (read $((n + 1)) time(s)); available_kb=$(xs_read $d data/meminfo/available_kb) floor $(xs_read $d data/meminfo/balloon_floor_kb) KiB"
    else
        fail meminfo-$d "total_kb='$tot', xl list $xm MiB, parts sum to '$sum' ($((n + 1)) reads)"
    fi
done

ballastd_start
if wait_until 90 targets_settled 2 b1 b2 b3; then
    pass shared "the daemon shared the host out (size/target MiB):$SIZES; host free $(host_free_mib) MiB"
else
    fail shared "not settled within 90 s:$SIZES; $(xenstore-read /tool/ballastd/status)"
fi

t0=$(now_ms)
out=$(/lab/ballastd reserve 512 --timeout-s 120 2>&1); rc=$?
ms=$(( $(now_ms) - t0 ))
free=$(host_free_mib)
if [ $rc -eq 0 ] && is_uint "$free" && [ "$free" -ge 512 ]; then
    pass reserve "ballastd reserve 512 in $ms ms: $(echo "$out" | _oneline); xl info free_memory $free MiB"
    log "BENCH reserve512_ms=$ms"
else
    fail reserve "rc=$rc after $ms ms, free $free MiB: $(echo "$out" | _oneline)"
fi
for d in b1 b2 b3; do
    t=$(target_mib $d)
    if is_uint "$t" && [ "$t" -ge 128 ]; then pass above-min-$d "target $t MiB, at least the 128 MiB minimum (a quarter of 512)"
    else fail above-min-$d "target '$t' MiB"; fi
done
ballast_guest b4 512 512 || exit 1
pass fourth "xl create of a 512 MiB guest succeeded after the reservation: $(xl list | tr -s ' ' | tr '\n' ';')"
if l=$(wait_until 30 ballastd_said 'reservation of 512 MiB done'); then pass reservation-ends "$(ballastd_said 'reservation of 512 MiB done')"
else fail reservation-ends "the daemon still holds the reservation: $(xenstore-read /tool/ballastd/reserve 2>&1)"; fi
if wait_until 120 targets_settled 2 b1 b2 b3 b4; then pass shared-4 "four guests (size/target MiB):$SIZES; host free $(host_free_mib) MiB"
else fail shared-4 "not settled within 120 s:$SIZES"; fi

# Garbage where the daemon reads: a range that is not a number, statistics that lie about the
# guest's size (the guest rewrites them within a second; dom0 keeps writing the lie for 8 s).
xs_write b2 memory/dynamic-min lots >/dev/null
i=0; while [ $i -lt 16 ]; do xs_write b3 data/meminfo/total_kb 99999999 >/dev/null; sleep 0.5; i=$((i + 1)); done
id2=$(domid b2); id3=$(domid b3)
l1=$(ballastd_said "domain $id2: memory/dynamic-min = \"lots\" is not a number")
l2=$(ballastd_said "domain $id3: statistics say 99999999 KiB")
if [ -n "$l1" ] && [ -n "$l2" ] && ballastd_alive && wait_until 30 targets_settled 4 b1 b2 b3 b4; then
    pass garbage "$l1; $l2; still balanced (size/target MiB):$SIZES"
else
    fail garbage "logged: '$l1' '$l2'; alive: $(ballastd_alive && echo yes || echo no); size/target:$SIZES"
fi
xenstore-rm "/local/domain/$id2/memory/dynamic-min"

t0=$(now_ms)
out=$(/lab/ballastd reserve 4000 --timeout-s 60 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q 'cannot make 4000 MiB free'; then
    pass reserve-impossible "rc=$rc after $(( $(now_ms) - t0 )) ms: $(echo "$out" | tail -n 1)"
else
    fail reserve-impossible "rc=$rc: $(echo "$out" | _oneline)"
fi

for d in b1 b2 b3 b4; do console_mark $d; done
for d in b1 b2 b3 b4; do pattern_ok pattern-$d $d 40; done
if ballastd_alive; then pass daemon-alive "ballastd still running: $(xenstore-read /tool/ballastd/status)"
else fail daemon-alive "ballastd exited: $(tail -n 5 "$BALLASTD_LOG" | _oneline)"; fi
for d in b1 b2 b3 b4; do xl destroy $d; done
