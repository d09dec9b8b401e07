#!/bin/sh
# The balloon keeps its size across save/restore and checkpoint, and a target changed while a
# checkpoint is being taken ends at the newest value; then it deflates back to 256 MiB.
# needs: ballast
# timeout: 240
. /lab/lib.sh
OURS=ballast
IMAGES="/tmp/bs.img /tmp/bs.rc"
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg || exit 1
expect_console ready ballast 'aspace: space [0-9]+: [0-9]+ pages verified' 60 || exit 1

xlc mem-set ballast 64m
expect_mem inflated ballast 64 60
timed_xl 120 save ballast /tmp/bs.img || { fail save "xl save failed: $XL_OUT"; exit 1; }
log "figures: save at 64 MiB $XL_MS ms, image $(file_size /tmp/bs.img) bytes"
console_mark ballast
timed_xl 120 restore /tmp/bs.img || { fail restore "xl restore failed: $XL_OUT"; exit 1; }
rm -f /tmp/bs.img
expect_console resumed ballast 'suspend: done: Resumed' 30
sleep 3
expect_mem still-64 ballast 64 10
cur=$(xs_read ballast data/balloon/current_kb)
if [ "$cur" = 65536 ]; then pass balloon-kept "data/balloon/current_kb=$cur after restore"
else fail balloon-kept "data/balloon/current_kb=$cur, want 65536"; fi
pattern_ok pattern-64 ballast

# A target written while a checkpoint is in progress: the newest value wins.
console_mark ballast
( xl save -c ballast /tmp/bs.img >/dev/null 2>&1; echo $? >/tmp/bs.rc ) &
sleep 1
xl mem-set ballast 128m
wait
rm -f /tmp/bs.img
if [ "$(cat /tmp/bs.rc)" = 0 ]; then pass checkpoint "xl save -c succeeded while the target changed"
else fail checkpoint "xl save -c exited $(cat /tmp/bs.rc)"; fi
expect_mem newest-target ballast 128 60

xlc mem-set ballast 256m
expect_mem deflated ballast 256 60
pattern_ok pattern-256 ballast
