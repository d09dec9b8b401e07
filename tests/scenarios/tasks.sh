#!/bin/sh
# ballast's self-test tasks over ~30 s of guest uptime with a 64 MiB pattern
# (ballast.pattern=64): every sleeper reports itself alive, the pattern verifies with no
# errors (console and data/selftest/*), pattern passes keep growing, and sysrq t / m dump the
# task list and the memory figures.
# needs: ballast
# timeout: 130
. /lab/lib.sh

# ---- local helpers (xs_read/xs_write/xs_wait_uint come from lib.sh and take a domain name or domid first)
OURS=ballast       # destroyed at exit by lib.sh's _scenario_exit
IMAGES=
trap _scenario_exit EXIT
# console_all ERE: every line of ballast's console (whole log) matching ERE
console_all() { tr -d '\r' <"$(console_log ballast)" 2>/dev/null | grep -E -e "$1"; }

expect_xl create create /lab/ballast.cfg 'extra="ballast.pattern=64"' || exit 1
DOMID=$(domid ballast)
expect_console cmdline ballast 'ballast [0-9.]+ on Xen.*cmdline="ballast\.pattern=64"' 30 || exit 1
expect_console ready ballast 'control: watching control/shutdown' 30 || exit 1
expect_console pattern-written ballast 'selftest: pattern of 64 MiB written' 30

# ---- data/selftest/pattern_mib reports the size asked for on the command line
# (the publisher may run before the pattern is written: it is given 13 s)
if mib=$(xs_wait_eq "$DOMID" data/selftest/pattern_mib 64 13); then
    pass pattern-mib "data/selftest/pattern_mib = $mib"
else
    fail pattern-mib "data/selftest/pattern_mib = '$mib', expected 64"
fi

# ---- let ~30 s of guest time pass
uptime_30() { up=$(xs_read "$DOMID" data/uptime); is_uint "$up" && [ "$up" -ge 30 ]; }
t0=$(now_ms)
if wait_until 60 uptime_30; then
    pass uptime-30s "data/uptime = $up after $(( $(now_ms) - t0 )) ms of waiting"
else
    fail uptime-30s "data/uptime = '$up' after $(( $(now_ms) - t0 )) ms of waiting (want >= 30)"
fi

# ---- sleepers: each has reported itself alive at least twice (every 10 s of its life)
for s in sleeper-100ms sleeper-250ms sleeper-1s; do
    lines=$(console_all "selftest: $s alive, [0-9]+ wake-ups")
    n=$(printf '%s' "$lines" | grep -c .)
    if [ "$n" -ge 2 ]; then
        pass "$s-alive" "$n alive lines, last: $(printf '%s\n' "$lines" | tail -n 1 | _oneline)"
    else
        fail "$s-alive" "$n 'selftest: $s alive' lines by uptime $up s (expected >= 2)"
    fi
done
late=$(console_all 'selftest: sleeper-[0-9a-z]+ woke [0-9]+ ms after')
[ -n "$late" ] && log "late sleeper wake-ups (reported, not failed): $(printf '%s\n' "$late" | _oneline)"
w=$(xs_read "$DOMID" data/selftest/sleeper_wakeups)
# 30 s: sleeper-100ms alone wakes ~300 times (allow TCG slack)
if is_uint "$w" && [ "$w" -ge 150 ]; then
    pass sleeper-wakeups "data/selftest/sleeper_wakeups = $w by uptime >= $up s"
else
    fail sleeper-wakeups "data/selftest/sleeper_wakeups = '$w' by uptime $up s (expected >= 150)"
fi

# ---- pattern: verified passes on the console, all with errors 0, no PATTERN ERROR
ok=$(console_all 'selftest: pattern 64 MiB verified, pass [0-9]+, errors 0$')
n=$(printf '%s' "$ok" | grep -c .)
if [ "$n" -ge 2 ]; then
    pass pattern-verified "$n 'errors 0' lines, last: $(printf '%s\n' "$ok" | tail -n 1 | _oneline)"
else
    fail pattern-verified "$n 'selftest: pattern 64 MiB verified ... errors 0' lines (expected >= 2); $(console_all 'selftest: pattern' | tail -n 3 | _oneline)"
fi
bad=$(console_all 'PATTERN ERROR|selftest: pattern .*errors [1-9]')
if [ -z "$bad" ]; then
    pass no-pattern-error "no PATTERN ERROR / nonzero errors line on the console"
else
    fail no-pattern-error "$(printf '%s\n' "$bad" | head -n 3 | _oneline)"
fi
e=$(xs_read "$DOMID" data/selftest/pattern_errors)
if [ "$e" = 0 ]; then
    pass pattern-errors-0 "data/selftest/pattern_errors = 0"
else
    fail pattern-errors-0 "data/selftest/pattern_errors = '$e'"
fi
p1=$(xs_read "$DOMID" data/selftest/pattern_passes)
sleep 4
p2=$(xs_read "$DOMID" data/selftest/pattern_passes)
if is_uint "$p1" && is_uint "$p2" && [ "$p1" -gt 0 ] && [ "$p2" -gt "$p1" ]; then
    pass pattern-passes-grow "data/selftest/pattern_passes $p1 -> $p2 over 4 s"
else
    fail pattern-passes-grow "data/selftest/pattern_passes '$p1' then '$p2' 4 s later"
fi

# ---- sysrq t: one line per task
console_mark ballast
if out=$(xs_write "$DOMID" control/sysrq t); then
    expect_console sysrq-t-header ballast 'sysrq: [0-9]+ tasks, [0-9]+ context switches' 10
    for t in pattern sleeper-100ms shutdown-control; do
        expect_console "sysrq-t-$t" ballast "sysrq: task +[0-9]+ $t " 5
    done
else
    fail sysrq-t "xenstore-write control/sysrq t failed: $out"
fi

# ---- sysrq m: memory figures; the 64 MiB pattern is not free
console_mark ballast
if out=$(xs_write "$DOMID" control/sysrq m); then
    if l=$(wait_console ballast 'sysrq: memory total=[0-9]+ KiB free=[0-9]+ KiB' 10); then
        total=$(printf '%s' "$l" | sed -n 's/.*total=\([0-9]*\) KiB.*/\1/p')
        free=$(printf '%s' "$l" | sed -n 's/.* free=\([0-9]*\) KiB.*/\1/p')
        pass sysrq-m "$l"
        if [ "$total" -gt 0 ] && [ "$free" -lt $((total - 65536)) ]; then
            pass memory-accounts-pattern "free $free KiB < total $total KiB - 64 MiB pattern"
        else
            fail memory-accounts-pattern "free $free KiB is not below total $total KiB - 65536 KiB (64 MiB pattern held)"
        fi
    else
        fail sysrq-m "no 'sysrq: memory total=' line within 10 s; tail: $(_console_since_mark ballast | tail -n 5 | _oneline)"
    fi
else
    fail sysrq-m "xenstore-write control/sysrq m failed: $out"
fi

# ---- clean up
destroy_gone destroy gone 15 ballast
