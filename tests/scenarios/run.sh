#!/bin/sh
# Interactive-ish run (make run): create ballast, stream its console for RUN_SECS (30) seconds,
# then destroy it.
# needs: ballast
# timeout: 60
. /lab/lib.sh

expect_xl create create /lab/ballast.cfg || exit 1
tail_console ballast 30
log "state after 30 s: $(domstate ballast)"
expect_xl destroy destroy ballast
