#!/bin/sh
# ballast boots as a Xen PV guest: banner on its console, listed as running/blocked, destroyable.
# needs: ballast
# timeout: 60
. /lab/lib.sh

t0=$(now_ms)
expect_xl create create /lab/ballast.cfg || exit 1
expect_console banner ballast 'ballast .* Xen 4\.17' 30
log "banner $(( $(now_ms) - t0 )) ms after xl create started"
if st=$(wait_state ballast rb 10); then
    pass listed "xl list: ballast state $st"
else
    fail listed "ballast state '$st', expected r or b; $(xl list 2>&1)"
fi
expect_xl destroy destroy ballast
if wait_gone ballast 10; then
    pass gone "ballast absent from xl list"
else
    fail gone "still listed: $(xl list 2>&1)"
fi
