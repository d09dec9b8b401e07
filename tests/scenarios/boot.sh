#!/bin/sh
# ballast boots as a Xen PV guest: banner on its console, a grant ended and its ref reused, the
# live grant's entry right, listed as running/blocked, destroyable.
# needs: ballast
# timeout: 60
. /lab/lib.sh

t0=$(now_ms)
expect_xl create create /lab/ballast.cfg || exit 1
expect_console banner ballast 'ballast .* Xen 4\.17' 30
log "banner $(( $(now_ms) - t0 )) ms after xl create started"
expect_console grant-ref-reused ballast 'grant: ref [0-9]+ ended and handed out again' 10
expect_console grant-verified ballast 'grant: ref [0-9]+ verified: pfn 0x[0-9a-f]+ at frame' 10
if st=$(wait_state ballast rb 10); then
    pass listed "xl list: ballast state $st"
else
    fail listed "ballast state '$st', expected r or b; $(xl list 2>&1)"
fi
destroy_gone destroy gone 10 ballast
