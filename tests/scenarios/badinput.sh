#!/bin/sh
# Garbage from dom0 in control/shutdown, control/sysrq and data/echo: every value gets its log
# line (or, where noted, is at least survived), nothing powers the guest off, and afterwards the
# guest still runs: data/uptime grows, the task count is unchanged, xl lists it running/blocked,
# sysrq t is still answered and a final `xl shutdown -w` works (the control task survived).
# Note: xenstore-write unescapes its value (\xNN, \\), which is how raw bytes are written here.
# needs: ballast
# timeout: 130
. /lab/lib.sh

# ---- local helpers (xs_read/xs_write/xs_wait_uint come from lib.sh and take a domain name or domid first)
OURS=ballast       # destroyed at exit by lib.sh's _scenario_exit
IMAGES=
trap _scenario_exit EXIT
# send NAME NODE VALUE ERE: write VALUE to NODE and expect a console line matching ERE
send() {
    console_mark ballast
    if _o=$(xs_write "$DOMID" "$2" "$3"); then
        expect_console "$1" ballast "$4" 10
    else
        fail "$1" "xenstore-write $2 failed: $_o"
    fi
}
x3000=$(printf '%3000s' '' | tr ' ' x)
y3000=$(printf '%3000s' '' | tr ' ' y)
z3000=$(printf '%3000s' '' | tr ' ' z)

expect_xl create create /lab/ballast.cfg || exit 1
DOMID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 30 || exit 1
# The balloon starts its watcher task once it has read static-max; count
# tasks after that and after the next 1 s publish.
wait_console ballast 'balloon: static-max' 30 >/dev/null
sleep 2
tasks0=$(xs_wait_uint "$DOMID" data/tasks 10)
up0=$(xs_wait_uint "$DOMID" data/uptime 10)

# ---- control/shutdown: each unknown value is named in a warning and ignored
send sd-bogus control/shutdown bogus 'control: ignoring unknown shutdown request "bogus"$'
send sd-long-3000 control/shutdown "$x3000" 'control: ignoring unknown shutdown request "x{64}"$'
send sd-spaces control/shutdown 'power off now' 'control: ignoring unknown shutdown request "power off now"$'
send sd-suspend-now control/shutdown suspend-now 'control: ignoring unknown shutdown request "suspend-now"$'
send sd-trailing-space control/shutdown 'poweroff ' 'control: ignoring unknown shutdown request "poweroff "$'
send sd-capitalised control/shutdown Reboot 'control: ignoring unknown shutdown request "Reboot"$'
send sd-ctrl-char control/shutdown 'halt\x01' 'control: ignoring unknown shutdown request "halt.u.1."$'
send sd-not-utf8 control/shutdown '\xff\xfe' 'control: reading control/shutdown failed: .*UTF-8.*; ignored'
# none of that may have stopped the domain
if st=$(wait_state ballast rb 2); then
    pass sd-still-running "after 8 bad control/shutdown values: state $st, domid $(domid ballast)"
else
    fail sd-still-running "state '$st' after bad control/shutdown values; $(xl list 2>&1 | tr '\n' ' ')"
    exit 1
fi

# ---- control/sysrq: unknown keys and values that are not one key
send sysrq-zz control/sysrq zz "control: sysrq value \"zz\" is not a single key; ignored"
send sysrq-x control/sysrq x "control: sysrq key 'x' has no action; ignored"
send sysrq-ctrl control/sysrq '\x01' "control: sysrq key '.u.1.' has no action; ignored"
send sysrq-non-ascii control/sysrq 'é' "control: sysrq key 'é' has no action; ignored"
send sysrq-long-3000 control/sysrq "$y3000" "control: sysrq value \"y{32}\" is not a single key; ignored"
send sysrq-spaces control/sysrq 't m' "control: sysrq value \"t m\" is not a single key; ignored"
# Not UTF-8: the guest cannot decode it. Only survival is required here (next checks); whether
# it said anything is logged.
console_mark ballast
xs_write "$DOMID" control/sysrq '\xff' >/dev/null
if l=$(wait_console ballast 'sysrq|control/sysrq' 3); then
    log "control/sysrq = \\xff produced: $l"
else
    log "control/sysrq = \\xff produced no console line within 3 s (silently ignored)"
fi

# ---- data/echo: a long value is cut, not choked on
send echo-long-3000 data/echo "$z3000" 'echo: z{200}$'

# ---- the guest survived all of it
st=$(wait_state ballast rb 2) && pass alive-state "xl list: ballast state $st" ||
    fail alive-state "state '$st'; $(xl list 2>&1 | tr '\n' ' ')"
u1=$(xs_read "$DOMID" data/uptime)
sleep 2
u2=$(xs_read "$DOMID" data/uptime)
if is_uint "$u1" && is_uint "$u2" && [ "$u2" -gt "$u1" ] && [ "$u1" -gt "$up0" ]; then
    pass alive-uptime "data/uptime $up0 (before the garbage) -> $u1 -> $u2 (2 s later)"
else
    fail alive-uptime "data/uptime $up0 (before), '$u1', then '$u2' 2 s later"
fi
tasks1=$(xs_read "$DOMID" data/tasks)
if [ "$tasks1" = "$tasks0" ]; then
    pass alive-tasks "data/tasks still $tasks1"
else
    fail alive-tasks "data/tasks was $tasks0, now '$tasks1'"
fi
bad=$(tr -d '\r' <"$(console_log ballast)" | grep -E 'panicked|ERROR|cannot watch|byte stream corrupt|ring fault')
if [ -z "$bad" ]; then
    pass no-errors "no panic / ERROR / xenstore fault line on the console"
else
    fail no-errors "$(printf '%s\n' "$bad" | head -n 3 | _oneline)"
fi
send alive-sysrq control/sysrq t 'sysrq: [0-9]+ tasks, [0-9]+ context switches'

# ---- the control task still obeys
console_mark ballast
t0=$(now_ms)
if xl_bounded 40 shutdown -w ballast && wait_gone ballast 5; then
    pass final-shutdown "ballast gone $(( $(now_ms) - t0 )) ms after xl shutdown -w: $XL_OUT"
else
    fail final-shutdown "xl shutdown -w rc=$_xrc: $XL_OUT; $(xl list 2>&1 | tr '\n' ' ')"
fi
expect_console final-poweroff-console ballast 'control: poweroff requested' 5
