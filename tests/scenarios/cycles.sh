#!/bin/sh
# 25 suspend cycles of a 64 MiB ballast, alternating xl save + xl restore and xl save -c, with
# xenstore traffic between them (a data/echo value that must come back on the console, a
# data/uptime read) and, if the guest has a balloon (data/balloon), xl mem-set between 48 and
# 64 MiB. At the end: still running, data/suspend/count = cycles done, pattern errors 0, no
# PATTERN ERROR / MISMATCH / panic, and every echo value on the console (no console line lost).
# needs: ballast
# timeout: 600
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
IMG=/tmp/cycles.img
IMAGES=$IMG
CYCLES=${CYCLES:-25}

expect_xl create create /lab/ballast.cfg 'memory=64' 'maxmem=64' $VCPUS_CFG || exit 1
ID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30

done_n=0 restores=0 checkpoints=0 echoes="" broken=""
save_sum=0 restore_sum=0 ck_sum=0 g_sum=0 g_max=0 mem=64 balloon=no
xenstore-exists "/local/domain/$ID/data/balloon" 2>/dev/null && balloon=yes
log "balloon node data/balloon: $balloon"
i=1
while [ $i -le $CYCLES ]; do
    console_mark ballast
    if [ $((i % 2)) -eq 1 ]; then
        if ! timed_xl 120 save ballast "$IMG"; then broken="cycle $i: xl save rc=$_xrc: $XL_OUT"; break; fi
        save_sum=$((save_sum + XL_MS))
        size=$(file_size "$IMG")
        if ! wait_gone ballast 10; then broken="cycle $i: still listed after xl save"; break; fi
        if ! timed_xl 120 restore "$IMG"; then broken="cycle $i: xl restore rc=$_xrc: $XL_OUT"; break; fi
        restore_sum=$((restore_sum + XL_MS)); restores=$((restores + 1))
        rm -f "$IMG"
        ID=$(domid ballast)
        want=Resumed
    else
        if ! timed_xl 120 save -c ballast "$IMG"; then broken="cycle $i: xl save -c rc=$_xrc: $XL_OUT"; break; fi
        ck_sum=$((ck_sum + XL_MS)); checkpoints=$((checkpoints + 1))
        rm -f "$IMG"
        want=Cancelled
    fi
    if ! l=$(wait_console ballast "suspend: done: [A-Za-z]+, .*suspends=$i " 30); then
        broken="cycle $i: no 'suspend: done ... suspends=$i' line; tail: $(console_text ballast | tail -n 4 | tr '\n' ' ')"
        break
    fi
    case $l in *"done: $want,"*) ;; *) broken="cycle $i: expected $want: $l"; break ;; esac
    g=$(printf '%s\n' "$l" | sed -n 's/.*, total \([0-9]*\) us.*/\1/p')
    g_sum=$((g_sum + g)); [ "$g" -gt "$g_max" ] && g_max=$g
    done_n=$i
    # xenstore traffic: an echo value that must reach the console, an uptime read
    val="cyc-$i-$(now_ms)"
    if ! out=$(xenstore-write "/local/domain/$ID/data/echo" "$val" 2>&1); then
        broken="cycle $i: xenstore-write data/echo failed: $out"; break
    fi
    echoes="$echoes $val"
    if ! wait_console ballast "echo: $val\$" 15 >/dev/null; then
        broken="cycle $i: echo $val not on the console within 15 s"; break
    fi
    up=$(xs_wait_uint "$ID" data/uptime 5) || { broken="cycle $i: data/uptime unreadable: $up"; break; }
    if [ "${VCPUS:-1}" -gt 1 ] && ! ticks_advance "$ID" "$VCPUS"; then
        broken="cycle $i: not every vCPU ticks: [$_w] -> [$_w2]"; break
    fi
    if [ $balloon = yes ]; then
        if [ $mem = 64 ]; then mem=48; else mem=64; fi
        xl_bounded 30 mem-set ballast "${mem}m" || { broken="cycle $i: xl mem-set ${mem}m failed"; break; }
    fi
    echo "@@LAB $SCENARIO: cycle $i/$CYCLES $want (domid $ID) guest total ${g} us, uptime $up"
    i=$((i + 1))
done
if [ -n "$broken" ]; then fail cycles "$broken (after $done_n good cycles)"
else pass cycles "$done_n cycles: $restores save+restore, $checkpoints save -c"; fi
[ $restores -gt 0 ] && log "xl save avg $((save_sum / restores)) ms, xl restore avg $((restore_sum / restores)) ms, image ${size:-?} bytes"
[ $checkpoints -gt 0 ] && log "xl save -c avg $((ck_sum / checkpoints)) ms"
[ $done_n -gt 0 ] && log "guest-side suspend total avg $((g_sum / done_n)) us, max $g_max us"

# ---- final state
running still-running ballast
ID=$(domid ballast)
if is_uint "$ID"; then
    v=$(xs_wait_eq "$ID" data/suspend/count "$done_n" 10) && pass suspend-count "data/suspend/count = $v" ||
        fail suspend-count "data/suspend/count '$v', expected $done_n"
    v=$(xs_wait_eq "$ID" data/suspend/cancels "$checkpoints" 5) && pass cancels "data/suspend/cancels = $v" ||
        fail cancels "data/suspend/cancels '$v', expected $checkpoints"
    v=$(xs_read "$ID" data/selftest/pattern_errors)
    [ "$v" = 0 ] && pass pattern-errors "data/selftest/pattern_errors = 0 (passes $(xs_read "$ID" data/selftest/pattern_passes))" ||
        fail pattern-errors "data/selftest/pattern_errors '$v'"
    console_mark ballast
    pattern_ok pattern-after ballast 40
    smp_ok vcpus-tick ballast
fi
if [ $balloon = yes ] && is_uint "$ID"; then
    v=$(xs_wait_eq "$ID" data/balloon/current_kb $((mem * 1024)) 15) &&
        pass balloon "data/balloon/current_kb = $v after the last xl mem-set ${mem}m" ||
        fail balloon "data/balloon/current_kb '$v' after xl mem-set ${mem}m (target_kb $(xs_read "$ID" data/balloon/target_kb))"
fi
no_damage no-damage ballast
lost=""
for val in $echoes; do
    console_text ballast | grep -q "echo: $val\$" || lost="$lost $val"
done
if [ -z "$lost" ]; then pass echoes "all $(echo $echoes | wc -w) echo values are on the console"
else fail echoes "echo values missing from the console:$lost"; fi

destroy_gone destroy gone 15 ballast
