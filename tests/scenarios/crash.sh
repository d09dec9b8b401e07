#!/bin/sh
# ballast.panic=1 on the command line makes ballast panic; with on_crash="preserve" the domain
# must stay listed in state c (crashed) after printing the whole panic message (vCPU, place, reason).
# needs: ballast
# timeout: 60
. /lab/lib.sh

expect_xl create create /lab/ballast.cfg 'extra="ballast.panic=1"' || exit 1
expect_console panic-message ballast 'panicked on vCPU 0 at .*panic requested on the command line' 30
if st=$(wait_state ballast c 15); then
    pass crashed "xl list: ballast state $st"
else
    fail crashed "ballast state '$st', expected c; $(xl list 2>&1)"
fi
destroy_gone destroy gone 10 ballast
