#!/bin/sh
# xl save + xl restore of a 256 MiB ballast: the guest freezes, suspends and resumes in a new
# domain; its console goes on, the memory pattern still verifies with 0 errors, the sleepers wake
# up again, xenstore figures (data/suspend/count, data/uptime) go on, and the console reader that
# was blocked across the suspend gets what is typed after the restore. The guest offers the
# suspend event channel, libxl asks through it, and the restored guest offers a new one.
# needs: ballast
# timeout: 200
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
IMG=/tmp/save-restore.img
IMAGES=$IMG

expect_xl create create /lab/ballast.cfg || exit 1
ID1=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30
wait_console ballast 'selftest: sleeper-[0-9a-z]+ alive' 25 >/dev/null ||
    log "no sleeper line before the save (not fatal)"
c0=$(xs_wait_uint "$ID1" data/suspend/count 10)
u0=$(xs_wait_uint "$ID1" data/uptime 10)
log "before save: domid $ID1, data/suspend/count=$c0, data/uptime=$u0"

if _ch=$(xs_wait_uint "$ID1" device/suspend/event-channel 10); then pass channel-offered "device/suspend/event-channel = $_ch"
else fail channel-offered "device/suspend/event-channel reads '$_ch'"; fi

# ---- save
console_mark ballast
if timed_xl 120 save ballast "$IMG"; then
    pass save "xl save ballast $IMG in $XL_MS ms, image $(file_size "$IMG") bytes"
else
    fail save "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
SAVE_MS=$XL_MS
log "xl save wall ${SAVE_MS} ms, image $(file_size "$IMG") bytes"
expect_gone saved-gone 10 ballast
expect_console suspend-requested ballast 'control: suspend requested through the event channel' 5
expect_console froze ballast 'suspend: froze [0-9]+ tasks' 5
expect_console devices ballast 'suspend: suspended [0-9]+ devices' 5
expect_console pinned ballast 'suspend: pinned 1 of 1 address spaces' 5

# ---- restore
console_mark ballast
if timed_xl 120 restore "$IMG"; then
    pass restore "xl restore $IMG in $XL_MS ms"
else
    fail restore "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
log "xl restore wall ${XL_MS} ms"
ID2=$(domid ballast)
rm -f "$IMG"
if is_uint "$ID2" && [ "$ID2" != "$ID1" ]; then pass new-domain "restored as domid $ID2 (was $ID1)"
else fail new-domain "domid after restore '$ID2' (was $ID1)"; fi
expect_console xenstore-reconnected ballast 'xenstore: reconnected on port [0-9]+' 30
expect_console resumed-new-domain ballast 'suspend: resumed in a new domain' 30
if l=$(wait_console ballast 'suspend: done: Resumed' 30); then
    pass done-resumed "$l"
    log "guest side: $(printf '%s\n' "$l" | done_figures)"
else
    fail done-resumed "no 'suspend: done: Resumed'; console tail: $(console_text ballast | tail -n 5 | tr '\n' ' ')"
fi
# everything after this mark was printed after the resume
console_mark ballast
pattern_ok pattern-after ballast 40
expect_console sleeper-after ballast 'selftest: sleeper-[0-9a-z]+ alive, [0-9]+ wake-ups' 30
no_damage no-damage ballast
running running ballast

c1=$(xs_wait_eq "$ID2" data/suspend/count $(( ${c0:-0} + 1 )) 10) &&
    pass suspend-count "data/suspend/count $c0 -> $c1" ||
    fail suspend-count "data/suspend/count '$c1', expected $(( ${c0:-0} + 1 )) (was '$c0')"
u1=$(xs_wait_uint "$ID2" data/uptime 10)
if is_uint "$u1" && is_uint "$u0" && [ "$u1" -ge "$u0" ]; then
    pass uptime-not-reset "data/uptime $u0 before save, $u1 after restore"
else
    fail uptime-not-reset "data/uptime '$u0' before save, '$u1' after restore"
fi
uptime_grows uptime-grows "$ID2"
if _ch=$(xs_wait_uint "$ID2" device/suspend/event-channel 10); then pass channel-offered-again "new domain: device/suspend/event-channel = $_ch"
else fail channel-offered-again "new domain: device/suspend/event-channel reads '$_ch'"; fi

# ---- the console reader, blocked since boot, gets text typed after the restore
tty=$(xs_read "$ID2" console/tty)
word="lab-in-$(now_ms)"
if [ -c "$tty" ]; then
    console_mark ballast
    printf '%s\r' "$word" >"$tty"
    expect_console console-input ballast "console: read [0-9]+ bytes: \"$word" 15
else
    fail console-input "console/tty of domid $ID2 is '$tty', not a character device"
fi

# ---- clean up
destroy_gone destroy gone 15 ballast
