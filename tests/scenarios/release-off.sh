#!/bin/sh
# The small-image switch off: `ballast.release=0` keeps memory populated, so the image is full
# size, and save/restore behave otherwise the same. Then the xenstore switch turns it back on
# for a running guest (data/suspend/release = 1 makes the next checkpoint small). The guest also
# offers no suspend event channel here (`ballast.suspend_evtchn=0`), so both suspends go through
# libxl's xenstore handshake (control/shutdown and its acknowledgement).
# needs: ballast
# timeout: 220
. /lab/lib.sh
OURS=ballast
IMAGES=/tmp/off.img
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg 'extra="ballast.release=0 ballast.suspend_evtchn=0"' || exit 1
expect_console ready ballast 'aspace: space [0-9]+: [0-9]+ pages verified' 60 || exit 1
_ch=$(xs_read ballast device/suspend/event-channel)
if [ -z "$_ch" ]; then pass no-channel "device/suspend/event-channel left empty"
else fail no-channel "device/suspend/event-channel is '$_ch' with ballast.suspend_evtchn=0"; fi
console_mark ballast
timed_xl 120 save ballast /tmp/off.img || { fail save "xl save failed: $XL_OUT"; exit 1; }
size=$(file_size /tmp/off.img)
if [ "$size" -ge $(( 250 * 1024 * 1024 )) ]; then pass full-image "image $size bytes (full size); xl save $XL_MS ms"
else fail full-image "image $size bytes, expected >= 250 MiB"; fi
expect_console switched-off ballast 'releasing free memory is switched off' 5
expect_console asked-by-xenstore ballast 'control: suspend requested; acknowledged' 5
timed_xl 120 restore /tmp/off.img || { fail restore "xl restore failed: $XL_OUT"; exit 1; }
rm -f /tmp/off.img
log "figures: full image $size bytes, xl restore $XL_MS ms"
expect_console resumed ballast 'suspend: done: Resumed' 30
expect_mem at-target ballast 256 30
pattern_ok pattern ballast

# Now on through xenstore, for the running guest.
xenstore-write "/local/domain/$(domid ballast)/data/suspend/release" 1
console_mark ballast
timed_xl 120 save -c ballast /tmp/off.img || { fail checkpoint "xl save -c failed: $XL_OUT"; exit 1; }
size=$(file_size /tmp/off.img)
rm -f /tmp/off.img
if [ "$size" -le $(( 32 * 1024 * 1024 )) ]; then pass switched-on "data/suspend/release=1: checkpoint image $size bytes"
else fail switched-on "data/suspend/release=1 but image $size bytes"; fi
expect_console cancelled ballast 'suspend: done: Cancelled' 30
pattern_ok pattern-after ballast
