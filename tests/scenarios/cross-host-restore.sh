#!/bin/sh
# Cold migration, boot 2 of 2: restore the ballast that cross-host-save wrote to /dev/vda on a
# host whose dom0 has another size (so all machine frames differ): `xl restore /dev/vda` (the
# stream ends itself). ballast resumes, its pattern verifies with 0 errors, its unpinned address
# space verifies, xenstore answers and the console reader still works.
# needs: ballast
# timeout: 200
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
DISK=/dev/vda
NOTE_MB=280

[ -b "$DISK" ] || { fail disk "no $DISK (run.py --disk FILE)"; exit 1; }
note=$(dd if=$DISK bs=1M skip=$NOTE_MB count=1 2>/dev/null | head -n 1 | tr -d '\0')
case $note in
XHOSTNOTE*) pass note "note from host 1: $note" ;;
*) fail note "no note from cross-host-save at ${NOTE_MB} MiB of $DISK: '$note'"; exit 1 ;;
esac
kb1=$(printf '%s\n' "$note" | sed -n 's/.*dom0_kb=\([0-9]*\).*/\1/p')
p1=$(printf '%s\n' "$note" | sed -n 's/.*passes=\([0-9]*\).*/\1/p')
tag=$(printf '%s\n' "$note" | sed -n 's/.*tag=\([^ ]*\).*/\1/p')
dom0_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
log "host 2: dom0 MemTotal ${dom0_kb} kB (host 1: ${kb1} kB), xl list 0: $(xl list 0 2>&1 | awk 'NR==2 {print "mem=" $3 "MiB"}'), $(xl info 2>&1 | awk '/^total_memory|^free_memory/ {printf "%s=%s ", $1, $3}')"
if [ "$dom0_kb" != "$kb1" ]; then pass other-host "dom0 MemTotal $dom0_kb kB here, $kb1 kB on host 1"
else fail other-host "dom0 has the same size ($dom0_kb kB) as on host 1: pass another --dom0-mem"; fi

console_mark ballast
if timed_xl 120 restore "$DISK"; then
    pass restore "xl restore $DISK in $XL_MS ms"
    log "xl restore from $DISK wall $XL_MS ms"
else
    fail restore "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
ID=$(domid ballast)
expect_console xenstore-reconnected ballast 'xenstore: reconnected on port [0-9]+' 30
if l=$(wait_console ballast 'suspend: done: Resumed' 30); then
    pass done-resumed "$l"
    log "guest side: $(printf '%s\n' "$l" | done_figures)"
else
    fail done-resumed "no 'suspend: done: Resumed'; tail: $(console_text ballast | tail -n 5 | tr '\n' ' ')"
fi
console_mark ballast
pattern_ok pattern-after ballast 40
smp_ok vcpus-tick-after ballast
expect_console aspace-after ballast 'aspace: space 1: 64 pages verified through its own mappings' 30
running running ballast
p2=$(xs_wait_uint "$ID" data/selftest/pattern_passes 10)
if is_uint "$p2" && is_uint "$p1" && [ "$p2" -gt "$p1" ]; then
    pass same-guest "data/selftest/pattern_passes $p1 on host 1, $p2 here: the counters went on"
else
    fail same-guest "data/selftest/pattern_passes '$p1' on host 1, '$p2' here"
fi
v=$(xs_read "$ID" data/selftest/pattern_errors)
[ "$v" = 0 ] && pass pattern-errors "data/selftest/pattern_errors = 0" || fail pattern-errors "data/selftest/pattern_errors '$v'"
v=$(xs_wait_eq "$ID" data/suspend/count 1 10) && pass suspend-count "data/suspend/count = $v" ||
    fail suspend-count "data/suspend/count '$v', expected 1"
uptime_grows uptime-grows "$ID"
val="xhost-back-$(now_ms)"
console_mark ballast
xenstore-write "/local/domain/$ID/data/echo" "$val"
expect_console echo-after ballast "echo: $val\$" 10
no_damage no-damage ballast

destroy_gone destroy gone 15 ballast
