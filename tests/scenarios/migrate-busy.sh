#!/bin/sh
# A guest that keeps dirtying 64 MiB (`ballast.dirty=64`: every MiB verified, then rewritten with
# the next generation) still migrates live, twice: its rewritten memory and its fixed pattern
# verify afterwards, the rewriting goes on, and xl list matches what the guest accounts for.
# needs: ballast
# timeout: 300
. /lab/lib.sh

OURS="ballast ballast--incoming ballast--migratedaway"
IMAGES=
trap _scenario_exit EXIT

expect_xl create create /lab/ballast.cfg 'extra="ballast.dirty=64"' || exit 1
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
expect_console dirtying ballast 'selftest: dirtying 64 MiB continuously' 60 || exit 1
pattern_ok pattern-before ballast 30
for i in 1 2; do
    id=$(domid ballast)
    p0=$(xs_wait_uint "$id" data/selftest/dirty_passes 10)
    if migrate ballast 200; then pass "migrate-$i" "xl migrate while dirtying 64 MiB: $XL_MS ms (dirty pass $p0 before)"
    else fail "migrate-$i" "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"; running "running-$i" ballast; exit 1; fi
    expect_migrated "resumed-$i" ballast "$id" || exit 1
    console_mark ballast
    pattern_ok "pattern-$i" ballast 40
    id=$(domid ballast)
    p1=$(xs_wait_uint "$id" data/selftest/dirty_passes 10)
    sleep 5
    p2=$(xs_wait_uint "$id" data/selftest/dirty_passes 10)
    e=$(xs_read "$id" data/selftest/pattern_errors)
    if is_uint "$p1" && is_uint "$p2" && [ "$p2" -gt "$p1" ] && [ "$p1" -ge "${p0:-0}" ] && [ "$e" = 0 ]; then
        pass "dirtying-$i" "dirty passes $p0 before, $p1 -> $p2 over 5 s after; pattern_errors=$e"
    else
        fail "dirtying-$i" "dirty passes '$p0' before, '$p1' -> '$p2' after; pattern_errors='$e'"
    fi
    xl_kb_matches "accounted-$i" ballast
done
no_damage no-damage ballast
expect_xl destroy destroy ballast
