#!/bin/sh
# ballastd leaves alone the guests that do not follow their targets: the reference Linux guest (no
# statistics; its balloon stalls above a 48 MiB target) and a ballast guest with its balloon
# switched off (ballast.balloon=0) are marked memory/uncooperative within 20 s of being asked to
# shrink, their targets are not touched again, and a cooperative ballast guest beside them is
# balanced as usual. Every guest keeps running.
# needs: ballast linux-guest
# timeout: 360
. /lab/lib.sh
OURS="linux-guest stiff b1"
IMAGES=
trap _scenario_exit EXIT

expect_xl create-linux create /lab/linux-guest.cfg || exit 1
expect_console linux-up linux-guest 'linux-guest ready' 60
ballast_guest stiff 256 256 ballast.balloon=0 || exit 1
ballast_guest b1 256 512 || exit 1
# Each asked to shrink well below where it stands.
xs_write linux-guest memory/dynamic-min 49152; xs_write linux-guest memory/dynamic-max 49152
xs_write stiff memory/dynamic-min 131072; xs_write stiff memory/dynamic-max 131072

ballastd_start
t0=$(now_ms)
for d in linux-guest stiff; do
    if wait_until 60 _xs_is $d memory/uncooperative 1; then
        pass uncooperative-$d "marked after $(( $(now_ms) - t0 )) ms: xl list $(xl_mem_of $d) MiB, target $(target_mib $d) MiB; $(ballastd_said "domain $(domid $d): still")"
    else
        fail uncooperative-$d "memory/uncooperative '$(xs_read $d memory/uncooperative)' after 60 s; xl list $(xl_mem_of $d) MiB, target $(target_mib $d) MiB"
    fi
done
tl=$(xs_read linux-guest memory/target); ts=$(xs_read stiff memory/target)
sleep 8
tl2=$(xs_read linux-guest memory/target); ts2=$(xs_read stiff memory/target)
if [ "$tl" = "$tl2" ] && [ "$ts" = "$ts2" ]; then pass left-alone "targets unchanged over 8 s: linux-guest $tl2 KiB, stiff $ts2 KiB"
else fail left-alone "targets moved: linux-guest $tl -> $tl2, stiff $ts -> $ts2"; fi
u=$(xs_read b1 memory/uncooperative)
if [ "$u" != 1 ] && wait_until 60 targets_settled 2 b1; then pass b1-cooperative "b1 follows its target (size/target MiB):$SIZES"
else fail b1-cooperative "b1 uncooperative='$u', size/target:$SIZES"; fi
s=$(xenstore-read /tool/ballastd/status)
case "$s" in *uncooperative=2*) pass status "$s" ;; *) fail status "$s" ;; esac
running linux-running linux-guest
running stiff-running stiff
console_mark b1; pattern_ok pattern-b1 b1 40
console_mark stiff; pattern_ok pattern-stiff stiff 40
