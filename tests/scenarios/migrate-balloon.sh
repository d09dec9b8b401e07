#!/bin/sh
# Ballooning around live migrations: `xl mem-set` followed at once by `xl migrate`; `xl mem-set`
# while the migration's live rounds run; a guest squeezed to 64 MiB, migrated, then grown back to
# 256 MiB. Each migration must succeed, and afterwards the guest sits at its domain's target with
# nothing orphaned (xl list = what the guest accounts for) and follows the next mem-set.
# needs: ballast
# timeout: 360
. /lab/lib.sh

OURS="ballast ballast--incoming ballast--migratedaway"
IMAGES=
trap _scenario_exit EXIT
xl dmesg -c >/dev/null 2>&1

# target_mib DOM: the domain's memory/target in MiB
target_mib() { _t=$(xs_read "$1" memory/target); is_uint "$_t" && echo $(( _t / 1024 )); }
# after_migration N: the checks every migration here ends with
after_migration() {
    expect_migrated "resumed-$1" ballast "$2" || exit 1
    console_mark ballast
    pattern_ok "pattern-$1" ballast 40
    t=$(target_mib ballast)
    if is_uint "$t"; then expect_mem "at-target-$1" ballast "$t" 20
    else fail "at-target-$1" "memory/target unreadable: '$(xs_read ballast memory/target)'"; fi
    xl_kb_matches "accounted-$1" ballast
}

expect_xl create create /lab/ballast.cfg || exit 1
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30

# 1. mem-set, then migrate at once
id=$(domid ballast)
xlc mem-set ballast 128m || fail mem-set-128 "xl mem-set ballast 128m -> rc=$_xrc $XL_OUT"
if migrate ballast 120; then pass migrate-after-mem-set "xl mem-set 128m then xl migrate at once: $XL_MS ms"
else fail migrate-after-mem-set "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"; running still-running-1 ballast; exit 1; fi
after_migration 1 "$id"
expect_mem at-128 ballast 128 10

# 2. mem-set while the live rounds run
id=$(domid ballast)
( sleep 3; xl mem-set ballast 96m >"$LAB_TMP/mem-set-during.out" 2>&1; echo "rc=$?" >>"$LAB_TMP/mem-set-during.out" ) &
if migrate ballast 120; then pass migrate-during-mem-set "xl migrate with xl mem-set 96m 3 s in: $XL_MS ms"
else fail migrate-during-mem-set "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"; running still-running-2 ballast; exit 1; fi
wait
log "mem-set during the migration: $(tr '\n' ' ' <"$LAB_TMP/mem-set-during.out")"
after_migration 2 "$id"
balloon_to follows-after-2 ballast 160
xl_kb_matches accounted-160 ballast

# 3. squeezed to 64 MiB, migrated, grown back
balloon_to squeeze-64 ballast 64
id=$(domid ballast)
if migrate ballast 120; then pass migrate-at-64 "xl migrate at 64 MiB: $XL_MS ms"
else fail migrate-at-64 "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"; running still-running-3 ballast; exit 1; fi
after_migration 3 "$id"
balloon_to grown-to-256 ballast 256 30
xl_kb_matches accounted-256 ballast
console_mark ballast
pattern_ok pattern-grown ballast 40
no_damage no-damage ballast
xen_log_clean no-over-allocation 'Over-allocation'
expect_xl destroy destroy ballast
