#!/bin/sh
# The balloon follows `xl mem-set`: 256 -> 32 -> 200 -> 8 (below the floor: stops there) -> 256 MiB.
# Each step converges (the console line, `xl list` Mem within 1 MiB, data/balloon/current_kb), the
# guest keeps answering xenstore, and the self-test pattern in its memory stays intact. Then a
# guest booted with memory=64 maxmem=288 grows into the pfns above its boot allocation.
# needs: ballast
# timeout: 360
. /lab/lib.sh
OURS=ballast
IMAGES=
trap _scenario_exit EXIT

console_mark ballast
expect_xl create create /lab/ballast.cfg || exit 1
expect_console balloon-up ballast 'balloon: target [0-9]+ KiB -> current [0-9]+ KiB' 60 || exit 1
expect_console pattern-written ballast 'selftest: pattern of [0-9]+ MiB written' 60 || exit 1
log "boot: $(xl list ballast | tail -n 1); floor $(xs_read ballast data/balloon/floor_kb) KiB"

echo_n=0
for mib in 32 200 8 256; do
    kb=$((mib * 1024))
    console_mark ballast
    t0=$(now_ms)
    xlc mem-set ballast "${mib}m" || { fail "set-$mib" "xl mem-set failed: $XL_OUT"; continue; }
    if ! line=$(wait_console ballast "balloon: target $kb KiB -> current [0-9]+ KiB in [0-9]+ ms" 90); then
        fail "converge-$mib" "no reconciliation line within 90 s; console: $(_console_since_mark ballast | tail -n 5 | _oneline)"
        continue
    fi
    wall=$(( $(now_ms) - t0 ))
    cur=$(printf '%s\n' "$line" | sed -E 's/.*-> current ([0-9]+) KiB in ([0-9]+) ms.*/\1/')
    ms=$(printf '%s\n' "$line" | sed -E 's/.*-> current ([0-9]+) KiB in ([0-9]+) ms.*/\2/')
    rate=$(printf '%s\n' "$line" | sed -E 's/.* ms \(([0-9]+) pages\/s.*/\1/')
    if [ "$mib" -eq 8 ]; then
        floor=$(xs_read ballast data/balloon/floor_kb)
        if wait_console ballast 'below the floor of [0-9]+ KiB' 1 >/dev/null && [ "$cur" -gt "$kb" ]; then
            pass clamp-8 "stopped at $cur KiB (floor published: $floor KiB): $(wait_console ballast 'below the floor' 1)"
        else
            fail clamp-8 "current $cur KiB, no floor line; $line"
        fi
        want=$cur
    else
        want=$kb
    fi
    if [ "$cur" -eq "$want" ]; then pass "converge-$mib" "$line (xl mem-set to line: $wall ms)"
    else fail "converge-$mib" "current $cur KiB, expected $want: $line"; fi
    if v=$(xs_wait_eq ballast data/balloon/current_kb "$cur" 10); then pass "published-$mib" "data/balloon/current_kb=$cur"
    else fail "published-$mib" "data/balloon/current_kb=$v, console said $cur"; fi
    # xl list reports Xen's count in MiB; allow the 1 MiB slack.
    xm=$(xl_mem_of ballast); d=$(( xm - cur / 1024 )); [ $d -lt 0 ] && d=$(( -d ))
    if [ -n "$xm" ] && [ $d -le 1 ]; then pass "xl-list-$mib" "xl list Mem $xm MiB, guest $cur KiB"
    else fail "xl-list-$mib" "xl list Mem '$xm' MiB, guest $cur KiB"; fi
    moved_mib=$(( rate * ms / 1000 / 256 ))
    log "target $mib MiB: $cur KiB in $ms ms in the guest ($rate pages/s = $(( rate / 256 )) MiB/s, ~$moved_mib MiB moved), $wall ms from xl mem-set"
    # The guest still answers xenstore.
    echo_n=$((echo_n + 1))
    xenstore-write "/local/domain/$(domid ballast)/data/echo" "alive-$mib-$echo_n"
    expect_console "alive-$mib" ballast "echo: alive-$mib-$echo_n" 20
done

# The pattern: a full pass after the last change, no error on the console, none counted.
console_mark ballast
pattern_ok pattern ballast 60
log "retries $(xs_read ballast data/balloon/retries)"

destroy_gone destroy gone 10 ballast

# Growing above the boot allocation (memory=64, maxmem=288): the guest grows its pfn space to
# static-max (a longer p2m, republished frame lists, page tables made on demand), follows
# `xl mem-set 288m` all the way, and a save/restore of the grown guest brings it back whole.
console_mark ballast
expect_xl create-grow create /lab/ballast.cfg 'memory=64' 'maxmem=288' || exit 1
expect_console grow-space ballast 'mm: pfn space grown from [0-9]+ to 73728 pages' 60 || exit 1
expect_console grow-up ballast 'balloon: static-max 294912 KiB, 73728 pfns' 30
xlc mem-set ballast 288m
expect_console grow-288 ballast 'balloon: target 294912 KiB -> current 294912 KiB in [0-9]+ ms' 90
if wait_mem ballast 288 30; then pass grow-xl-list "xl list Mem $(xl_mem_of ballast) MiB after growing to static-max"
else fail grow-xl-list "xl list Mem '$(xl_mem_of ballast)' MiB, expected 288"; fi
console_mark ballast
if timed_xl 120 save ballast /tmp/grown.img && timed_xl 120 restore /tmp/grown.img; then
    pass grow-save-restore "saved and restored the grown guest (image $(file_size /tmp/grown.img) bytes)"
else
    fail grow-save-restore "xl save/restore of the grown guest failed: $XL_OUT"
fi
rm -f /tmp/grown.img
expect_console grow-resumed ballast 'suspend: done: Resumed' 30
if wait_mem ballast 288 30; then pass grow-restored-size "xl list Mem $(xl_mem_of ballast) MiB after restore"
else fail grow-restored-size "xl list Mem '$(xl_mem_of ballast)' MiB after restore, expected 288"; fi
xenstore-write "/local/domain/$(domid ballast)/data/echo" "alive-grown"
expect_console grow-alive ballast 'echo: alive-grown' 20
pattern_ok grow-pattern ballast
destroy_gone destroy-grow gone-grow 10 ballast
