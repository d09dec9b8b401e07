#!/bin/sh
# An idle 256 MiB ballast saves to an image of at most 1/8 of its memory: free frames go back to
# Xen before the suspend hypercall. The restored guest thaws first and then takes them back in
# the background (returns to 256 MiB), its pattern verifies, and data/suspend/ shows what was
# released and repopulated.
# needs: ballast
# timeout: 180
. /lab/lib.sh
OURS=ballast
IMAGES=/tmp/small.img
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg || exit 1
expect_console ready ballast 'aspace: space [0-9]+: [0-9]+ pages verified' 60 || exit 1

console_mark ballast
timed_xl 120 save ballast /tmp/small.img || { fail save "xl save failed: $XL_OUT"; exit 1; }
size=$(file_size /tmp/small.img)
limit=$(( 256 * 1024 * 1024 / 8 ))
if [ "$size" -le "$limit" ]; then pass image-size "image $size bytes <= 1/8 of 256 MiB ($limit); xl save took $XL_MS ms"
else fail image-size "image $size bytes > $limit"; fi
log "figures: xl save $XL_MS ms, image $size bytes"
expect_console released ballast 'suspend: released [0-9]+ free pages' 5

console_mark ballast
timed_xl 120 restore /tmp/small.img || { fail restore "xl restore failed: $XL_OUT"; exit 1; }
rm -f /tmp/small.img
restore_ms=$XL_MS
t0=$(now_ms)
expect_console resumed ballast 'suspend: done: Resumed' 30
expect_console restocked ballast 'restock: back to ([0-9]+) of \1 pages' 30
answered_first ballast
expect_mem back-to-target ballast 256 30
log "figures: xl restore $restore_ms ms, restore-to-target $(( restore_ms + $(now_ms) - t0 )) ms"
sleep 2
rel=$(xs_read ballast data/suspend/last_released_pages)
rep=$(xs_read ballast data/suspend/last_repopulated_pages)
if is_uint "$rel" && [ "$rel" -gt 32768 ] && [ "$rel" = "$rep" ]; then
    pass published "data/suspend: released $rel pages in $(xs_read ballast data/suspend/last_release_us) us, repopulated $rep in $(xs_read ballast data/suspend/last_repopulate_us) us"
else fail published "released=$rel repopulated=$rep"; fi
pattern_ok pattern ballast
expect_console grant-table ballast 'grant: table set up again \([0-9]+ frame\(s\), max [0-9]+\), [0-9]+ grants rewritten' 5
expect_console grant-entry ballast 'grant: ref [0-9]+ verified: pfn 0x[0-9a-f]+ at frame' 10
expect_console aspace ballast 'aspace: space [0-9]+: [0-9]+ pages verified' 20
