#!/bin/sh
# `xl save -c` with the small-image release: the original keeps running at its target with its
# pattern intact; the checkpoint image is small and restores as a clone that also returns to
# the target.
# needs: ballast
# timeout: 200
. /lab/lib.sh
OURS="ballast ballast2"
IMAGES=/tmp/ckpt.img
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg || exit 1
expect_console ready ballast 'aspace: space [0-9]+: [0-9]+ pages verified' 60 || exit 1

console_mark ballast
timed_xl 120 save -c ballast /tmp/ckpt.img || { fail checkpoint "xl save -c failed: $XL_OUT"; exit 1; }
size=$(file_size /tmp/ckpt.img)
limit=$(( 256 * 1024 * 1024 / 8 ))
if [ "$size" -le "$limit" ]; then pass image-size "checkpoint image $size bytes <= $limit; xl save -c took $XL_MS ms"
else fail image-size "checkpoint image $size bytes > $limit"; fi
expect_console cancelled ballast 'suspend: done: Cancelled' 30
expect_console restocked ballast 'restock: back to ([0-9]+) of \1 pages' 30
answered_first ballast
expect_mem original-at-target ballast 256 30
pattern_ok original-pattern ballast

sed 's/^name *=.*/name = "ballast2"/' /lab/ballast.cfg >/tmp/ballast2.cfg
console_mark ballast2
timed_xl 120 restore /tmp/ballast2.cfg /tmp/ckpt.img || { fail clone "xl restore failed: $XL_OUT"; exit 1; }
rm -f /tmp/ckpt.img
pass clone "restored the checkpoint as ballast2 in $XL_MS ms"
expect_console clone-resumed ballast2 'suspend: done: Resumed' 30
expect_mem clone-at-target ballast2 256 30
pattern_ok clone-pattern ballast2
pattern_ok original-still-ok ballast
