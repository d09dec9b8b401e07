#!/bin/sh
# Memory a task holds is never released: with a 200 MiB pattern the image is about 200 MiB, and
# the pattern verifies after the restore.
# needs: ballast
# timeout: 240
. /lab/lib.sh
OURS=ballast
IMAGES=/tmp/busy.img
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg 'extra="ballast.pattern=200"' || exit 1
expect_console written ballast 'selftest: pattern of 200 MiB written' 120 || exit 1
expect_console verified ballast 'selftest: pattern 200 MiB verified, pass [0-9]+, errors 0' 60

console_mark ballast
timed_xl 120 save ballast /tmp/busy.img || { fail save "xl save failed: $XL_OUT"; exit 1; }
size=$(file_size /tmp/busy.img)
lo=$(( 200 * 1024 * 1024 )); hi=$(( 240 * 1024 * 1024 ))
if [ "$size" -ge "$lo" ] && [ "$size" -le "$hi" ]; then pass image-size "image $size bytes, between 200 and 240 MiB; xl save $XL_MS ms"
else fail image-size "image $size bytes, expected 200..240 MiB"; fi
timed_xl 120 restore /tmp/busy.img || { fail restore "xl restore failed: $XL_OUT"; exit 1; }
rm -f /tmp/busy.img
log "figures: busy image $size bytes, xl restore $XL_MS ms"
expect_console resumed ballast 'suspend: done: Resumed' 30
expect_mem back-to-target ballast 256 30
pattern_ok pattern ballast 60
