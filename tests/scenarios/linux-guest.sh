#!/bin/sh
# Lab self-test: the reference Linux PV guest (Debian kernel + busybox initrd) boots, runs, and
# is destroyed. Proves xl create / console logging / destroy independently of ballast.
# needs: linux-guest
# timeout: 90
. /lab/lib.sh

t0=$(now_ms)
expect_xl create create /lab/linux-guest.cfg || exit 1
expect_console banner linux-guest 'linux-guest ready' 60
log "first banner after $(( $(now_ms) - t0 )) ms"
st=$(wait_state linux-guest rb 10) && pass state "xl list: linux-guest state $st" ||
    fail state "linux-guest state '$st', expected r or b"
destroy_gone destroy gone 10 linux-guest
