#!/bin/sh
# Five live migrations in a row (`xl migrate` to localhost, a local stand-in for ssh) of a
# 256 MiB ballast. After each: a new domid and no temporary domain left, the guest resumed, its
# console and data/ alive, the memory pattern and the address-space check intact, the balloon
# following a new target down and back up, and what Xen holds (xl list) equal to what the guest
# accounts for, within 1 MiB.
# needs: ballast
# timeout: 420
. /lab/lib.sh

OURS="ballast ballast--incoming ballast--migratedaway"
IMAGES=
trap _scenario_exit EXIT
aspace_re='aspace: space 1: 64 pages verified through its own mappings \(check [0-9]+\)'

xl dmesg -c >/dev/null 2>&1
expect_xl create create /lab/ballast.cfg $VCPUS_CFG || exit 1
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30
expect_console aspace-before ballast "$aspace_re" 30

for i in 1 2 3 4 5; do
    id=$(domid ballast)
    console_mark ballast
    if migrate ballast 120; then
        pass "migrate-$i" "xl migrate in $XL_MS ms"
    else
        fail "migrate-$i" "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"
        running "running-after-failure-$i" ballast
        exit 1
    fi
    expect_migrated "resumed-$i" ballast "$id" || exit 1
    log "migration $i: xl migrate ${XL_MS} ms; $(console_text ballast | grep -E 'suspend: released|restock: ' | tail -n 2 | tr '\n' ' ')"
    console_mark ballast
    pattern_ok "pattern-$i" ballast 40
    smp_ok "vcpus-tick-$i" ballast
    expect_console "aspace-$i" ballast "$aspace_re" 40
    uptime_grows "uptime-$i" "$(domid ballast)"
    expect_mem "at-target-$i" ballast 256 20
    xl_kb_matches "accounted-$i" ballast
    down=$(( 64 + 24 * i ))
    balloon_to "down-$i" ballast "$down"
    xl_kb_matches "accounted-down-$i" ballast
    balloon_to "up-$i" ballast 256
done
no_damage no-damage ballast
xen_log_clean no-over-allocation 'Over-allocation'
expect_xl destroy destroy ballast
