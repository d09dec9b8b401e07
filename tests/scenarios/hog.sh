#!/bin/sh
# A guest that needs memory gets it. Three ballast guests share the host through ballastd; the
# memory hog in b1 grows to 450 MiB, well past its share of ~400 MiB: b1 takes memory back from Xen itself (pressure
# deflates, in its console and data/meminfo), the daemon sees the pressure in its statistics, raises
# b1's target and squeezes the other two (never below their minimum); no guest crashes or stops
# answering and no hog page changes. The hog lets go and the shares come back to equal.
# needs: ballast
# timeout: 480
. /lab/lib.sh
OURS="b1 b2 b3"
IMAGES=
trap _scenario_exit EXIT

for d in b1 b2 b3; do ballast_guest $d 320 512 || exit 1; done
ballastd_start
if wait_until 90 targets_settled 2 b1 b2 b3; then pass shared "equal shares (size/target MiB):$SIZES"
else fail shared "not settled within 90 s:$SIZES"; fi
share=$(target_mib b2)

console_mark b1
t0=$(now_ms)
xs_write b1 data/hog/mib 450
if v=$(xs_wait_eq b1 data/hog/held_mib 450 180); then
    pass hog-grew "b1 holds 450 MiB after $(( $(now_ms) - t0 )) ms; refusals $(xs_read b1 data/hog/refusals); xl list b1 $(xl_mem_of b1) MiB"
else
    fail hog-grew "held_mib '$v' after 180 s; refusals $(xs_read b1 data/hog/refusals); console: $(_console_since_mark b1 | tail -n 4 | _oneline)"
fi
expect_console pressure-deflate b1 'pressure: (on|[0-9]+ KiB free, below)' 5
d=$(xs_read b1 data/meminfo/pressure_deflates)
if is_uint "$d" && [ "$d" -gt 0 ]; then pass meminfo-pressure "data/meminfo/pressure_deflates=$d pressure_kb=$(xs_read b1 data/meminfo/pressure_kb)"
else fail meminfo-pressure "pressure_deflates '$d'"; fi
id1=$(domid b1)
if wait_until 30 ballastd_said "domain $id1: under pressure" >/dev/null; then pass daemon-saw "$(ballastd_said "domain $id1: under pressure")"
else fail daemon-saw "no pressure line for domain $id1 in the daemon's log"; fi
if wait_until 60 targets_settled 4 b1 b2 b3; then :; fi
t1=$(target_mib b1); t2=$(target_mib b2); t3=$(target_mib b3)
if [ "$t1" -gt "$share" ] && [ "$t2" -lt "$share" ] && [ "$t3" -lt "$share" ] && [ "$t2" -ge 128 ] && [ "$t3" -ge 128 ]; then
    pass given "b1 target $t1 MiB (share was $share), b2 $t2, b3 $t3 MiB (minimum 128); size/target:$SIZES"
else
    fail given "targets b1 $t1, b2 $t2, b3 $t3 MiB, share was $share; size/target:$SIZES"
fi
log "BENCH hog_targets_mib b1=$t1 b2=$t2 b3=$t3 share=$share"
for x in b1 b2 b3; do running running-$x $x; done
n=$(xs_read b1 data/hog/errors)
[ "$n" = 0 ] && pass hog-intact "data/hog/errors=0" || fail hog-intact "data/hog/errors='$n'"

t0=$(now_ms)
xs_write b1 data/hog/mib 0
if v=$(xs_wait_eq b1 data/hog/held_mib 0 60); then pass hog-released "after $(( $(now_ms) - t0 )) ms"
else fail hog-released "held_mib '$v'"; fi
# Back to equal shares once the pressure has been gone 30 s (the daemon's hold) and b1 gave back.
if wait_until 150 targets_settled 2 b1 b2 b3 && [ "$(target_mib b1)" = "$(target_mib b2)" ]; then
    pass flows-back "equal shares again after $(( $(now_ms) - t0 )) ms (size/target MiB):$SIZES"
else
    fail flows-back "size/target MiB:$SIZES"
fi
for x in b1 b2 b3; do console_mark $x; pattern_ok pattern-$x $x 40; done
