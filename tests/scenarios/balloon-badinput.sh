#!/bin/sh
# Garbage in memory/target (written straight with xenstore-write) is logged and ignored: the
# guest stays at its last good target, keeps answering xenstore, and still follows a good target.
# needs: ballast
# timeout: 180
. /lab/lib.sh
OURS=ballast
IMAGES=
trap _scenario_exit EXIT


console_mark ballast
expect_xl create create /lab/ballast.cfg || exit 1
expect_console balloon-up ballast 'balloon: target [0-9]+ KiB -> current [0-9]+ KiB' 60 || exit 1
# A last good target that is not the boot size.
expect_xl mem-set mem-set ballast 96m || exit 1
expect_console good-target ballast 'balloon: target 98304 KiB -> current 98304 KiB' 60 || exit 1
dom=$(domid ballast)

i=0
for v in abc -5 99999999999999999999999 '' 12abc; do
    i=$((i + 1))
    console_mark ballast
    # `--`: a value like -5 is not an option of xenstore-write.
    if ! out=$(xenstore-write -- "/local/domain/$dom/memory/target" "$v" 2>&1); then
        fail "write-$i" "xenstore-write of '$v' failed: $out"; continue
    fi
    # The console shows the value quoted as Rust's {:?} does.
    expect_console "ignored-$i" ballast "balloon: ignoring memory/target \"$v\" " 20
done
sleep 1
cur=$(xs_read ballast data/balloon/current_kb); tgt=$(xs_read ballast data/balloon/target_kb)
if [ "$cur" = 98304 ] && [ "$tgt" = 98304 ]; then pass stayed "data/balloon current_kb=$cur target_kb=$tgt"
else fail stayed "data/balloon current_kb='$cur' target_kb='$tgt', expected 98304"; fi
xm=$(xl_mem_of ballast)
if [ "$xm" = 96 ] || [ "$xm" = 95 ]; then pass xl-list "xl list Mem $xm MiB"; else fail xl-list "xl list Mem '$xm' MiB, expected 96"; fi
if st=$(wait_state ballast rb 5); then pass running "state $st"; else fail running "state '$st'"; fi
xenstore-write "/local/domain/$dom/data/echo" "still-here"
expect_console alive ballast 'echo: still-here' 20
# A good target Xen will not back (xl mem-set 96m capped the domain at 96 MiB + 1 MiB, and a
# bare xenstore-write does not raise that): bounded retries, then the balloon gives up.
console_mark ballast
xenstore-write "/local/domain/$dom/memory/target" 131072
expect_console gives-up ballast 'balloon: giving up at [0-9]+ KiB, goal 131072 KiB' 60
log "retries in the guest: $(_console_since_mark ballast | grep -c 'short of the goal'), delays (ms): $(_console_since_mark ballast | sed -nE 's/.*retry [0-9]+ in ([0-9]+) ms.*/\1/p' | tr '\n' ' ')"
# And it still follows a target the toolstack sets properly.
console_mark ballast
expect_xl mem-set-128 mem-set ballast 128m
expect_console follows ballast 'balloon: target 131072 KiB -> current 131072 KiB' 60
pattern_ok pattern ballast

destroy_gone destroy gone 10 ballast
