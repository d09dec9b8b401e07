# ballastd figures for tests/bench/bench.sh (sourced; `make bench ONLY=daemon` runs only these).
#
# daemon_guest GUEST: three guests of GUEST's kernel at memory=320 maxmem=512 (d1 d2 d3) on a host
# with room for about two at full size, shared out by ballastd (reserve 32 MiB). Then:
# - daemon_reserve512_ms: `ballastd reserve 512` from that state until Xen has 512 MiB free;
# - hand_reserve512_ms: from the same state with the daemon stopped, what a user does by hand:
#   `xl mem-set` each guest down by an equal part of what is missing, until 512 MiB are free;
# - ballast only (the Linux guest has no memory hog): the hog in d1 grows to 450 MiB, past its
#   share, and back to 0; every 500 ms each guest's `xl list` size is compared with the target
#   the daemon gives it: hog_follow_mean_mib / hog_follow_max_mib (how close each guest stays to
#   its share), hog_grow_ms (450 MiB held), hog_share_mib (d1's target at the peak),
#   hog_others_mib (the smaller of the others' targets then) and hog_flowback_ms (from the
#   release until the three targets are equal again).
DAEMON_NAMES="d1 d2 d3"
DAEMON_WHAT="daemon_reserve512_ms hand_reserve512_ms hog_follow_mean_mib hog_follow_max_mib hog_grow_ms hog_share_mib hog_others_mib hog_flowback_ms"
daemon_missing() { for _m in $DAEMON_WHAT; do emit "$1" "$_m" null "$2"; done; }

daemon_cleanup() {
    [ -n "$BALLASTD_PID" ] && { kill "$BALLASTD_PID" 2>/dev/null; wait "$BALLASTD_PID" 2>/dev/null; BALLASTD_PID=; }
    xenstore-rm /tool/ballastd 2>/dev/null
    for _n in $DAEMON_NAMES; do xl destroy "$_n" >/dev/null 2>&1; done
    for _n in $DAEMON_NAMES; do wait_gone "$_n" 20; done
}

daemon_create() { # GUEST
    for _n in $DAEMON_NAMES; do
        if [ "$1" = ballast ]; then
            xl create /lab/ballast.cfg "name=\"$_n\"" memory=320 maxmem=512 >/dev/null 2>&1 || return 1
        else
            xl create /lab/linux-guest.cfg "name=\"$_n\"" memory=320 maxmem=512 >/dev/null 2>&1 || return 1
        fi
    done
    for _n in $DAEMON_NAMES; do wait_console "$_n" "$(ready_re "$1")" 90 >/dev/null || return 1; done
}

_free_at_least() { _f=$(host_free_mib); is_uint "$_f" && [ "$_f" -ge "$1" ]; }

daemon_start() {
    /lab/ballastd run >"$BALLASTD_LOG" 2>&1 &
    BALLASTD_PID=$!
    wait_until 15 xenstore-read /tool/ballastd/status >/dev/null 2>&1 && wait_until 120 targets_settled 4 $DAEMON_NAMES
}

# hog_sample: adds each guest's distance from its target (MiB) to the running sums
hog_sample() {
    for _n in $DAEMON_NAMES; do
        _t=$(target_mib "$_n"); _m=$(xl_mem_of "$_n")
        is_uint "$_t" && is_uint "$_m" || continue
        _dd=$(( _m - _t )); [ $_dd -lt 0 ] && _dd=$(( -_dd ))
        HOG_SUM=$(( HOG_SUM + _dd )); HOG_N=$(( HOG_N + 1 ))
        [ $_dd -gt "$HOG_MAX" ] && HOG_MAX=$_dd
    done
}
_equal_targets() { [ "$(target_mib d1)" = "$(target_mib d2)" ] && [ "$(target_mib d2)" = "$(target_mib d3)" ]; }

daemon_hog() {
    HOG_SUM=0 HOG_N=0 HOG_MAX=0
    _t0=$(now_ms)
    xs_write d1 data/hog/mib 450 >/dev/null
    _grow=
    while [ $(( $(now_ms) - _t0 )) -lt 30000 ]; do
        hog_sample
        if [ -z "$_grow" ] && [ "$(xs_read d1 data/hog/held_mib)" = 450 ]; then
            _grow=$(( $(now_ms) - _t0 ))
            _share=$(target_mib d1)
            _o2=$(target_mib d2); _o3=$(target_mib d3)
            _others=$_o2; [ "$_o3" -lt "$_o2" ] 2>/dev/null && _others=$_o3
        fi
        [ -n "$_grow" ] && [ $(( $(now_ms) - _t0 )) -gt $(( _grow + 5000 )) ] && break
        sleep 0.5
    done
    _t1=$(now_ms)
    xs_write d1 data/hog/mib 0 >/dev/null
    _back=
    while [ $(( $(now_ms) - _t1 )) -lt 90000 ]; do
        hog_sample
        if [ "$(xs_read d1 data/hog/held_mib)" = 0 ] && _equal_targets && targets_settled 4 $DAEMON_NAMES; then
            _back=$(( $(now_ms) - _t1 )); break
        fi
        sleep 0.5
    done
    [ "$HOG_N" -gt 0 ] && emit ballast hog_follow_mean_mib "$(awk -v s="$HOG_SUM" -v n="$HOG_N" 'BEGIN { printf "%.1f\n", s / n }')" "$HOG_N samples"
    emit ballast hog_follow_max_mib "$HOG_MAX"
    emit ballast hog_grow_ms "$_grow" "hog 0 -> 450 MiB in d1"
    emit ballast hog_share_mib "$_share" "d1's target with the hog at 450 MiB"
    emit ballast hog_others_mib "$_others" "the smaller of d2's and d3's targets then"
    emit ballast hog_flowback_ms "$_back" "hog released -> equal targets, sizes met"
}

daemon_guest() { # GUEST
    _dg=$1
    if ! daemon_create "$_dg" || ! daemon_start; then
        daemon_missing "$_dg" "three guests and the daemon did not settle: $(xl list 2>&1 | tr '\n' ' ')"
        daemon_cleanup; return 1
    fi
    log "$_dg: settled with the daemon: $SIZES; host free $(host_free_mib) MiB"
    _t0=$(now_ms)
    if /lab/ballastd reserve 512 --timeout-s 120 >/dev/null 2>&1; then emit "$_dg" daemon_reserve512_ms $(( $(now_ms) - _t0 ))
    else emit "$_dg" daemon_reserve512_ms null "ballastd reserve 512 failed"; fi
    # Back to the shared state, then by hand from there.
    xenstore-rm /tool/ballastd/reserve 2>/dev/null
    wait_until 120 targets_settled 4 $DAEMON_NAMES
    kill "$BALLASTD_PID" 2>/dev/null; wait "$BALLASTD_PID" 2>/dev/null; BALLASTD_PID=
    _free=$(host_free_mib)
    _each=$(( (512 + 2 - _free + 2) / 3 ))
    _t0=$(now_ms)
    for _n in $DAEMON_NAMES; do xl mem-set "$_n" "$(( $(xl_mem_of "$_n") - _each ))m" >/dev/null 2>&1; done
    if wait_until 120 _free_at_least 512; then emit "$_dg" hand_reserve512_ms $(( $(now_ms) - _t0 )) "xl mem-set each by -$_each MiB from $_free MiB free"
    else emit "$_dg" hand_reserve512_ms null "512 MiB not free within 120 s ($(host_free_mib) MiB)"; fi
    if [ "$_dg" = ballast ]; then
        if daemon_start; then daemon_hog
        else for _m in hog_follow_mean_mib hog_follow_max_mib hog_grow_ms hog_share_mib hog_others_mib hog_flowback_ms; do emit ballast "$_m" null "the daemon did not settle again"; done; fi
    else
        for _m in hog_follow_mean_mib hog_follow_max_mib hog_grow_ms hog_share_mib hog_others_mib hog_flowback_ms; do emit "$_dg" "$_m" null "no memory hog in the Linux guest"; done
    fi
    sed 's/^/[ballastd] /' "$BALLASTD_LOG" | tail -n 40
    daemon_cleanup
}
