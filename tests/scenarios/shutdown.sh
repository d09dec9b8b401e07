#!/bin/sh
# Orderly ends through the toolstack: `xl shutdown -w` powers ballast off (console shows the
# request and the task freeze, the domain disappears within a bound); `xl reboot` makes ballast
# reboot in place (on_reboot=restart): a second banner, a new domid, still listed; a final
# `xl shutdown -w` proves the rebooted instance answers control/shutdown too.
# needs: ballast
# timeout: 170
. /lab/lib.sh

# ---- local helpers (xs_read/xs_write/xs_wait_uint come from lib.sh and take a domain name or domid first)
OURS=ballast       # destroyed at exit by lib.sh's _scenario_exit
IMAGES=
trap _scenario_exit EXIT

# console_count OFFSET ERE: lines of ballast's console after byte OFFSET matching ERE
console_count() { tail -c +$(($1 + 1)) "$(console_log ballast)" 2>/dev/null | tr -d '\r' | grep -c -E -e "$2"; }
console_count_lines() { tail -c +$(($1 + 1)) "$(console_log ballast)" 2>/dev/null | tr -d '\r' | grep -E -e "$2" | _oneline; }
console_size() { wc -c <"$(console_log ballast)" 2>/dev/null | tr -d ' ' || echo 0; }

# ---------------------------------------------------------------- 1. poweroff
expect_xl create create /lab/ballast.cfg || exit 1
id1=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 30 || exit 1
console_mark ballast
t0=$(now_ms)
if xl_bounded 40 shutdown -w ballast; then
    ms=$(( $(now_ms) - t0 ))
    pass poweroff-xl "xl shutdown -w returned 0 after $ms ms: $XL_OUT"
else
    fail poweroff-xl "xl shutdown -w ballast -> rc=$_xrc after $(( $(now_ms) - t0 )) ms: $XL_OUT"
fi
if wait_gone ballast 5; then
    pass poweroff-gone "domid $id1 absent from xl list $(( $(now_ms) - t0 )) ms after xl shutdown started"
else
    fail poweroff-gone "still listed $(( $(now_ms) - t0 )) ms after xl shutdown: $(xl list 2>&1 | tr '\n' ' ')"
    exit 1
fi
# xl reports the shutdown reason; 0 is SHUTDOWN_poweroff.
case $XL_OUT in
    *"reason code 0"*) pass poweroff-reason "$(printf '%s\n' "$XL_OUT" | grep 'reason code')" ;;
    *) fail poweroff-reason "xl shutdown -w did not report reason code 0 (poweroff): $XL_OUT" ;;
esac
expect_console poweroff-requested ballast 'control: poweroff requested' 5
expect_console poweroff-stopped ballast 'power: Poweroff: [0-9]+ tasks stopped in [0-9]+ ms, shutting down' 5
if _l=$(_console_since_mark ballast | grep -E 'panicked|PATTERN ERROR|did not stop'); then
    fail poweroff-clean "unexpected console lines during poweroff: $_l"
else
    pass poweroff-clean "no panic / pattern error / unstoppable task during poweroff"
fi

# ---------------------------------------------------------------- 2. reboot
off2=$(console_size); off2=${off2:-0}
expect_xl create-2 create /lab/ballast.cfg || exit 1
id2=$(domid ballast)
expect_console ready-2 ballast 'control: watching control/shutdown' 30 || exit 1
console_mark ballast
t0=$(now_ms)
expect_xl reboot-xl reboot ballast
expect_console reboot-requested ballast 'control: reboot requested' 15
expect_console reboot-stopped ballast 'power: Reboot: [0-9]+ tasks stopped in [0-9]+ ms, shutting down' 10
expect_console reboot-banner ballast 'ballast [0-9.]+ on Xen' 60
# xl's monitor restarts the domain under a new id; wait for it to be listed again.
relisted() { id3=$(domid ballast); [ -n "$id3" ] && [ "$id3" != "$id2" ]; }
if wait_until 30 relisted; then
    pass reboot-new-domid "ballast relisted as domid $id3 (was $id2) $(( $(now_ms) - t0 )) ms after xl reboot"
else
    fail reboot-new-domid "after xl reboot: domid '$id3' (before: $id2); $(xl list 2>&1 | tr '\n' ' ')"
    exit 1
fi
if st=$(wait_state ballast rb 10); then
    pass reboot-listed "xl list: ballast (domid $id3) state $st"
else
    fail reboot-listed "ballast state '$st', expected r or b; $(xl list 2>&1 | tr '\n' ' ')"
fi
banners=$(console_count "$off2" 'ballast [0-9.]+ on Xen')
if [ "$banners" = 2 ]; then
    pass reboot-two-banners "console since the second create holds 2 banners (boot + reboot): $(console_count_lines "$off2" 'ballast [0-9.]+ on Xen')"
else
    fail reboot-two-banners "console since the second create holds '$banners' banner lines, expected 2"
fi
# The rebooted instance must be ready (its own watch registered) before it is asked to stop.
expect_console ready-3 ballast 'control: watching control/shutdown' 30

# ---------------------------------------------------------------- 3. shut the rebooted one down
console_mark ballast
t0=$(now_ms)
if xl_bounded 40 shutdown -w ballast && wait_gone ballast 5; then
    pass final-poweroff "rebooted ballast (domid $id3) gone $(( $(now_ms) - t0 )) ms after xl shutdown -w: $XL_OUT"
else
    fail final-poweroff "xl shutdown -w rc=$_xrc: $XL_OUT; $(xl list 2>&1 | tr '\n' ' ')"
fi
expect_console final-poweroff-console ballast 'power: Poweroff: [0-9]+ tasks stopped' 5
