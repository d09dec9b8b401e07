#!/bin/sh
# xl migrate to this same host, the receiver (xl migrate-receive) run locally through a pipe:
# `xl migrate -s '' ballast 'xl migrate-receive'` (an empty -s makes xl run HOST itself with sh -c
# instead of "ssh HOST xl migrate-receive"). Debian's Xen 4.17 has no shadow paging, so PV
# log-dirty and hence live migration fail today ("Failed to enable logdirty"); the outcome is
# recorded and the guest must be left running unharmed. If the migration succeeds one day, the
# migrated guest must run: resumed, pattern intact, xenstore answering.
# needs: ballast
# timeout: 200
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
OURS="ballast ballast--incoming ballast--migratedaway"

expect_xl create create /lab/ballast.cfg 'memory=64' 'maxmem=64' || exit 1
ID1=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30
c0=$(xs_wait_uint "$ID1" data/suspend/count 10)

console_mark ballast
if timed_xl 150 migrate -s '' ballast 'xl migrate-receive'; then
    outcome="succeeded"
else
    outcome="failed (exit status $_xrc)"
fi
why=$(printf '%s\n' "$XL_OUT" | grep -E -i -m3 'logdirty|error|fail|cannot|refused' | tr '\n' ' ')
log "OUTCOME: xl migrate $outcome after $XL_MS ms${why:+: $why}"
pass migrate-ran "xl migrate $outcome after $XL_MS ms${why:+: $why}"
sleep 1
for d in ballast--incoming ballast--migratedaway; do
    if xl domid "$d" >/dev/null 2>&1; then
        log "leftover $d after the migration attempt: $(xl list "$d" 2>&1 | tail -n 1)"
        [ "$d" = ballast--incoming ] && [ "$outcome" != succeeded ] && xlc destroy "$d"
    fi
done
ID2=$(domid ballast)
if ! is_uint "$ID2"; then
    fail guest-listed "no domain named ballast after the migration attempt: $(xl list 2>&1 | tr '\n' ' ')"
    exit 1
fi
running guest-running ballast
if [ "$outcome" = succeeded ]; then
    [ "$ID2" != "$ID1" ] && pass migrated "ballast now domid $ID2 (was $ID1)" ||
        fail migrated "migration reported success but ballast is still domid $ID1"
    if l=$(wait_console ballast 'suspend: done: Resumed' 30); then
        pass done-resumed "$l"; log "guest side: $(printf '%s\n' "$l" | done_figures)"
    else
        fail done-resumed "no 'suspend: done: Resumed' after the migration"
    fi
    if xl domid ballast--migratedaway >/dev/null 2>&1; then
        fail source-gone "ballast--migratedaway still listed: $(xl list 2>&1 | tr '\n' ' ')"
    else
        pass source-gone "no ballast--migratedaway left"
    fi
else
    [ "$ID2" = "$ID1" ] && pass same-domain "ballast still domid $ID1" ||
        fail same-domain "ballast domid $ID2, was $ID1, although the migration failed"
    # if the guest was asked to suspend, it must have been cancelled and continued
    if _console_since_mark ballast | grep -q 'control: suspend requested'; then
        if l=$(wait_console ballast 'suspend: done: Cancelled' 20); then
            pass guest-continued "guest was suspended and continued: $l"
        else
            fail guest-continued "guest was asked to suspend but shows no 'suspend: done: Cancelled'"
        fi
    else
        pass guest-untouched "the guest was never asked to suspend (no 'control: suspend requested')"
    fi
fi
console_mark ballast
pattern_ok pattern-after ballast 40
uptime_grows uptime-grows "$ID2"
no_damage no-damage ballast

expect_xl destroy destroy ballast
if wait_gone ballast 15; then pass gone "ballast absent from xl list"
else fail gone "still listed: $(xl list 2>&1 | tr '\n' ' ')"; fi
