#!/bin/sh
# Lab health: dom0 userland computes right while a 4-vCPU ballast runs. 20 s rounds of dom0 work
# (checksums, awk floating-point sums, xenstore reads) with ballast at vcpus=4 beside it; any crash
# or wrong answer is counted. Found Xen's lazy FPU switching under TCG corrupting dom0's
# floating-point state (hence spec-ctrl=eager-fpu in run.py).
# needs: ballast
# timeout: 400
. /lab/lib.sh

dd if=/dev/urandom of=/tmp/h.bin bs=1k count=2048 2>/dev/null
REF=$(sha256sum /tmp/h.bin | cut -d' ' -f1)
workload() { # NAME: 20 s of dom0 work, counting bad outcomes
    _bad=0; _n=0; _t0=$(now_ms)
    while [ $(( $(now_ms) - _t0 )) -lt 20000 ]; do
        _s=$(sha256sum /tmp/h.bin | cut -d' ' -f1)
        [ "$_s" = "$REF" ] || { _bad=$((_bad + 1)); log "sha256 $_s"; }
        _a=$(awk 'BEGIN { s = 0; for (i = 0; i < 20000; i++) s += i; print s }')
        [ "$_a" = "199990000" ] || { _bad=$((_bad + 1)); log "awk $_a"; }
        xenstore-read /local/domain/0/name >/dev/null 2>&1 || { _rc=$?; _bad=$((_bad + 1)); log "xenstore-read rc $_rc"; }
        _n=$((_n + 1))
    done
    if [ "$_bad" -eq 0 ]; then pass "$1" "$_n rounds, all right"; else fail "$1" "$_bad bad of $_n rounds"; fi
}
expect_xl create-ballast create /lab/ballast.cfg 'vcpus=4' || exit 1
expect_console ready ballast 'control: watching control/shutdown' 40
workload ballast-4-a
workload ballast-4-b
workload ballast-4-c
destroy_gone destroy gone 10 ballast
