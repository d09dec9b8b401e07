#!/bin/sh
# A vCPU that will not reach the suspend rendezvous: with ballast.holdvcpu=1:1 a task spins on
# vCPU 1 through one rendezvous. xl save fails (libxl times out waiting for the suspend), the
# guest names the vCPU, starts the one that did stop again, thaws, and runs on with nothing lost;
# the next xl save + xl restore work and both vCPUs tick again.
# needs: ballast
# timeout: 300
. /lab/lib.sh

OURS=ballast
IMAGES=
trap _scenario_exit EXIT
IMG=/tmp/smp-refuse.img
IMAGES=$IMG

expect_xl create create /lab/ballast.cfg 'vcpus=3' 'extra="ballast.holdvcpu=1:1"' || exit 1
ID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
expect_console holder ballast 'holder: keeping vCPU 1 from the next 1 rendezvous' 20
pattern_ok pattern-before ballast 30

console_mark ballast
if timed_xl 200 save ballast "$IMG"; then
    fail save-refused "xl save succeeded in $XL_MS ms although vCPU 1 never stopped"
else
    pass save-refused "xl save exit status $_xrc after $XL_MS ms"
fi
rm -f "$IMG"
expect_console refused-line ballast 'suspend: refused: vCPU 1 did not reach the rendezvous; all tasks thawed, guest runs on' 5
expect_console gave-up ballast 'holder: the rendezvous gave up \(1 of 1\)' 5
if [ "$(domid ballast)" = "$ID" ]; then pass same-domain "ballast still domid $ID"
else fail same-domain "ballast domid '$(domid ballast)', was $ID"; fi
v=$(xs_wait_eq "$ID" data/suspend/refused 1 10) && pass refused-count "data/suspend/refused = $v" ||
    fail refused-count "data/suspend/refused '$v', expected 1"
vcpus_tick ticks-after-refusal "$ID" 3
console_mark ballast
pattern_ok pattern-after-refusal ballast 40

console_mark ballast
if timed_xl 120 save ballast "$IMG"; then pass next-save "xl save in $XL_MS ms"
else fail next-save "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
expect_console quiesced ballast 'suspend: quiesced 2 other vCPUs' 5
if timed_xl 120 restore "$IMG"; then pass next-restore "xl restore in $XL_MS ms"
else fail next-restore "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
rm -f "$IMG"
ID=$(domid ballast)
expect_console resumed ballast 'suspend: done: Resumed' 30
vcpus_tick ticks-restored "$ID" 3
pattern_ok pattern-restored ballast 40
no_damage no-damage ballast
destroy_gone destroy gone 15 ballast
