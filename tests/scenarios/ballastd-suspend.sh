#!/bin/sh
# Save, restore and live migration of a guest while ballastd runs: the daemon survives the domain
# vanishing and reappearing under a new domid, balances the new domain like the old, and the guest
# keeps its memory pattern.
# needs: ballast
# timeout: 420
. /lab/lib.sh
OURS="b1 b2"
IMG=/tmp/b1.save
IMAGES=$IMG
trap _scenario_exit EXIT

for d in b1 b2; do ballast_guest $d 320 512 || exit 1; done
ballastd_start
if wait_until 90 targets_settled 2 b1 b2; then pass shared "(size/target MiB):$SIZES"
else fail shared "not settled:$SIZES"; fi

old=$(domid b1)
console_mark b1
if timed_xl 120 save b1 "$IMG"; then pass save "xl save in $XL_MS ms"; else fail save "rc=$_xrc $XL_OUT"; exit 1; fi
sleep 2
if timed_xl 120 restore "$IMG"; then pass restore "xl restore in $XL_MS ms"; else fail restore "rc=$_xrc $XL_OUT"; exit 1; fi
rm -f "$IMG"
expect_console resumed b1 'suspend: done: Resumed' 30
new=$(domid b1)
xenstore-write "/local/domain/$new/memory/target" $(( 300 * 1024 ))  # off its share: the daemon puts it back
_rebalanced() { [ "$(target_mib b1)" != 300 ] && targets_settled 2 b1 b2; }
if wait_until 60 _rebalanced; then
    pass balanced-after-restore "domid $old -> $new, balanced again (size/target MiB):$SIZES"
else
    fail balanced-after-restore "domid $old -> $new; target $(target_mib b1) MiB; size/target:$SIZES"
fi
pattern_ok pattern-restored b1 40

# A live migration to this host needs room for a second copy while it runs.
if out=$(/lab/ballastd reserve 560 --timeout-s 120 2>&1); then pass room-to-migrate "$(echo "$out" | tail -n 1)"
else fail room-to-migrate "$(echo "$out" | _oneline)"; fi
old=$(domid b1)
console_mark b1
if migrate b1 240; then pass migrate "xl migrate in $XL_MS ms"; else fail migrate "rc=$_r $XL_OUT"; exit 1; fi
expect_migrated migrated b1 "$old"
if wait_until 60 targets_settled 2 b1 b2; then pass balanced-after-migrate "(size/target MiB):$SIZES"
else fail balanced-after-migrate "size/target:$SIZES"; fi
pattern_ok pattern-migrated b1 40
if ballastd_alive; then pass daemon-alive "$(xenstore-read /tool/ballastd/status)"
else fail daemon-alive "ballastd exited: $(tail -n 5 "$BALLASTD_LOG" | _oneline)"; fi
