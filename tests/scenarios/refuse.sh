#!/bin/sh
# A refused suspend: with ballast.stubborn=5 a task stays out of safe points through all 5 freeze
# attempts of one suspend. xl save must fail (libxl times out waiting for the guest to suspend),
# the guest must say why, thaw and run on unharmed (data/suspend/refused = 1, pattern intact), and
# the next xl save + xl restore must succeed. Then a laggard (ballast.stubborn=1) that misses one
# freeze attempt: the guest retries, and an xl migrate succeeds (not libxl's 60 s timeout).
# needs: ballast
# timeout: 420
. /lab/lib.sh

OURS="ballast ballast--incoming ballast--migratedaway" # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
IMG=/tmp/refuse.img
IMAGES=$IMG

expect_xl create create /lab/ballast.cfg 'memory=64' 'maxmem=64' 'extra="ballast.stubborn=5"' || exit 1
ID1=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
expect_console stubborn-running ballast 'stubborn: running outside any safe point' 10
pattern_ok pattern-before ballast 30

# ---- the refused save
console_mark ballast
if timed_xl 200 save ballast "$IMG"; then
    fail save-refused "xl save succeeded in $XL_MS ms although the guest should refuse: $XL_OUT"
else
    pass save-refused "xl save exit status $_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"
fi
log "refused xl save: exit status $_xrc, wall $XL_MS ms (libxl's own timeout)"
rm -f "$IMG"
expect_console refused-line ballast 'suspend: refused: task stubborn \([0-9]+\) did not freeze in 5 attempts of 2000 ms; all tasks thawed, guest runs on' 5
expect_console gives-in ballast 'stubborn: 5 freeze attempts timed out; giving in' 5
if [ "$(domid ballast)" = "$ID1" ]; then pass same-domain "ballast still domid $ID1"
else fail same-domain "ballast domid '$(domid ballast)', was $ID1; $(xl list 2>&1 | tr '\n' ' ')"; fi
running runs-on ballast
v=$(xs_wait_eq "$ID1" data/suspend/refused 1 10) && pass refused-count "data/suspend/refused = $v" ||
    fail refused-count "data/suspend/refused '$v', expected 1"
console_mark ballast
pattern_ok pattern-after-refusal ballast 40
uptime_grows uptime-grows "$ID1"

# ---- the next save and restore work
console_mark ballast
if timed_xl 120 save ballast "$IMG"; then
    pass next-save "xl save in $XL_MS ms, image $(file_size "$IMG") bytes"
    log "second xl save wall $XL_MS ms, image $(file_size "$IMG") bytes"
else
    fail next-save "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
expect_gone saved-gone 10 ballast
console_mark ballast
if timed_xl 120 restore "$IMG"; then
    pass next-restore "xl restore in $XL_MS ms"
    log "xl restore wall $XL_MS ms"
else
    fail next-restore "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
rm -f "$IMG"
ID2=$(domid ballast)
if l=$(wait_console ballast 'suspend: done: Resumed' 30); then
    pass done-resumed "$l"
    log "guest side: $(printf '%s\n' "$l" | done_figures)"
else
    fail done-resumed "no 'suspend: done: Resumed'; tail: $(console_text ballast | tail -n 5 | tr '\n' ' ')"
fi
console_mark ballast
pattern_ok pattern-after-restore ballast 40
v=$(xs_wait_eq "$ID2" data/suspend/count 1 10) && pass suspend-count "data/suspend/count = $v (the refused one not counted)" ||
    fail suspend-count "data/suspend/count '$v', expected 1"
v=$(xs_read "$ID2" data/suspend/refused)
[ "$v" = 1 ] && pass refused-still-1 "data/suspend/refused = 1 after the restore" ||
    fail refused-still-1 "data/suspend/refused '$v' after the restore, expected 1"
no_damage no-damage ballast

destroy_gone destroy gone 15 ballast

# ---- a laggard: one freeze attempt times out, the next succeeds, the migration goes through
console_mark ballast
expect_xl create-laggard create /lab/ballast.cfg 'memory=64' 'maxmem=64' 'extra="ballast.stubborn=1"' || exit 1
ID3=$(domid ballast)
expect_console laggard-running ballast 'stubborn: running outside any safe point' 40 || exit 1
console_mark ballast
if migrate ballast 120; then pass laggard-migrate "xl migrate in $XL_MS ms"
else fail laggard-migrate "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3 | _oneline)"; exit 1; fi
if _l=$(sender_console ballast | grep -m1 'did not freeze within 2000 ms (attempt 1 of 5)'); then
    pass laggard-retried "$_l"
else fail laggard-retried "no freeze retry on the sender's console"; fi
expect_migrated laggard-resumed ballast "$ID3" || exit 1
v=$(xs_wait_eq "$(domid ballast)" data/suspend/freeze_retries 1 10) && pass freeze-retries "data/suspend/freeze_retries = $v" ||
    fail freeze-retries "data/suspend/freeze_retries '$v', expected 1"
console_mark ballast
pattern_ok pattern-after-migrate ballast 40
no_damage no-damage-laggard ballast
expect_xl destroy-laggard destroy ballast
