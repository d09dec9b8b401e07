# PV disk and network figures for tests/bench/bench.sh (sourced; `make bench ONLY=pv` runs only
# these). Each guest boots at 256 MiB with a 64 MiB disk (an image on a loop device) and one vif
# at 10.0.0.2 on xenbr0, as in the pv-linux and pv-ballast scenarios, and then:
# - blk_write_mibps / blk_read_mibps: one sequential write of the whole disk (ending with a flush)
#   and one sequential read of it. ballast runs its block bench (ballast.blkbench=64, self-test
#   off): 128 KiB requests, 8 kept in flight. Linux runs busybox dd with O_DIRECT in 1 MiB
#   blocks (conv=fsync on the write), which its blkfront splits into 128 KiB requests, 8 in flight
#   per block; timed by its own /proc/uptime (10 ms steps).
# - with dom0 pinging the guest 10 times a second throughout, one xl save + xl restore, one
#   checkpoint (xl save -c) and one live migration, each giving pv_KIND_answer_ms (from xl
#   returning to the first reply after it), pv_KIND_lost (requests never answered between the last
#   reply before the operation and the first after it) and pv_KIND_gap_ms (the longest time
#   without a reply), KIND = sr, ck, mg.
PV_ADDR=10.0.0.2
PV_VDEV=51712
PV_DISK_MIB=64
PV_DISK=$DISK_DIR/bench-pv.img
PV_WHAT="blk_write_mibps blk_read_mibps pv_sr_answer_ms pv_sr_lost pv_sr_gap_ms pv_ck_answer_ms pv_ck_lost pv_ck_gap_ms pv_mg_answer_ms pv_mg_lost pv_mg_gap_ms"
PV_LOOP=
pv_missing() { # GUEST NOTE [METRIC...]: null figures (all of them by default)
    _pm_g=$1 _pm_n=$2; shift 2
    [ $# -gt 0 ] || set -- $PV_WHAT
    for _m in "$@"; do emit "$_pm_g" "$_m" null "$_pm_n"; done
}

pv_cleanup() {
    _pv_cleanup
    PING_LOG=
    for _d in ballast linux-guest; do xl domid "$_d" >/dev/null 2>&1 && destroy "$_d"; done
    [ -n "$PV_LOOP" ] && loop_bound "$PV_LOOP" && disk_free "$PV_LOOP"
    PV_LOOP=
    rm -f "$PV_DISK"
}

# pv_blk_ballast: the figures of the bench ballast ran at boot
pv_blk_ballast() {
    if ! _r=$(xs_wait_uint ballast "data/blk/$PV_VDEV/bench_read_us" 120); then
        pv_missing ballast "no bench figures in 120 s (read '$_r', error '$(xs_read ballast data/blk/$PV_VDEV/bench_error)')" blk_write_mibps blk_read_mibps
        return 1
    fi
    _b=$(xs_read ballast "data/blk/$PV_VDEV/bench_bytes") _w=$(xs_read ballast "data/blk/$PV_VDEV/bench_write_us")
    emit ballast blk_write_mibps "$(awk -v b="$_b" -v u="$_w" 'BEGIN { if (u > 0) printf "%.1f\n", b / 1048576 / (u / 1e6) }')" "$_w us for $_b bytes"
    emit ballast blk_read_mibps "$(awk -v b="$_b" -v u="$_r" 'BEGIN { if (u > 0) printf "%.1f\n", b / 1048576 / (u / 1e6) }')" "$_r us for $_b bytes"
}

# pv_blk_linux: dd on the guest's shell, timed by its /proc/uptime; the answer line cannot be the
# echo of the command (that shows the variables' names)
pv_blk_linux() {
    console_mark linux-guest
    _tag="pvblk-r$RUN"
    _ty=$(console_type linux-guest "a=\$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of=/dev/xvda bs=1M count=$PV_DISK_MIB oflag=direct conv=fsync 2>/dev/null; w=\$?; b=\$(cut -d' ' -f1 /proc/uptime); dd if=/dev/xvda of=/dev/null bs=1M count=$PV_DISK_MIB iflag=direct 2>/dev/null; r=\$?; c=\$(cut -d' ' -f1 /proc/uptime); echo $_tag \$w \$r \$a \$b \$c") ||
        { pv_missing linux-guest "$_ty" blk_write_mibps blk_read_mibps; return 1; }
    if ! _l=$(wait_console linux-guest "$_tag [0-9]+ [0-9]+ [0-9.]+ [0-9.]+ [0-9.]+" 180); then
        pv_missing linux-guest "no answer from dd in 180 s" blk_write_mibps blk_read_mibps; return 1
    fi
    set -- $(printf '%s\n' "$_l" | sed -n "s/.*$_tag \([0-9]*\) \([0-9]*\) \([0-9.]*\) \([0-9.]*\) \([0-9.]*\).*/\1 \2 \3 \4 \5/p")
    if [ "$1" != 0 ] || [ "$2" != 0 ]; then
        pv_missing linux-guest "dd failed: write exit $1, read exit $2" blk_write_mibps blk_read_mibps; return 1
    fi
    emit linux-guest blk_write_mibps "$(awk -v m=$PV_DISK_MIB -v a="$3" -v b="$4" 'BEGIN { if (b > a) printf "%.1f\n", m / (b - a) }')" "uptime $3 -> $4"
    emit linux-guest blk_read_mibps "$(awk -v m=$PV_DISK_MIB -v a="$4" -v b="$5" 'BEGIN { if (b > a) printf "%.1f\n", m / (b - a) }')" "uptime $4 -> $5"
}

# pv_ping_op GUEST KIND: one operation while dom0 pings; emits pv_KIND_*
pv_ping_op() {
    _g=$1 _k=$2
    _op_start=$(now_ms)
    case $_k in
    sr) bxl 180 save "$_g" "$IMG" && wait_gone "$_g" 10 && bxl 180 restore "$IMG"; _r=$? ;;
    ck) bxl 180 save -c "$_g" "$IMG"; _r=$? ;;
    mg) migrate "$_g" 180; _r=$? ;;
    esac
    _op_end=$(now_ms)
    rm -f "$IMG"
    if [ $_r -ne 0 ]; then
        pv_missing "$_g" "xl ($_k) failed: $(printf '%s\n' "$XL_OUT" | tail -n 2 | _oneline)" "pv_${_k}_answer_ms" "pv_${_k}_lost" "pv_${_k}_gap_ms"
        return 1
    fi
    if ! ping_log_answer_after "$_op_end" 30; then
        pv_missing "$_g" "no reply within 30 s of xl ($_k) returning" "pv_${_k}_answer_ms" "pv_${_k}_lost" "pv_${_k}_gap_ms"
        return 1
    fi
    set -- $(ping_log_since "$_op_start" "$_op_end")
    emit "$_g" "pv_${_k}_answer_ms" "$1" "xl took $((_op_end - _op_start)) ms"
    emit "$_g" "pv_${_k}_lost" "$2"
    emit "$_g" "pv_${_k}_gap_ms" "$3"
    log "$_g $_k: answered $1 ms after xl returned, $2 lost, longest gap $3 ms"
    sleep 2
}

pv_guest() { # GUEST
    _pg=$1
    PV_LOOP=$(disk_new "$PV_DISK" $PV_DISK_MIB) || { pv_missing "$_pg" "no disk image: $PV_LOOP"; PV_LOOP=; return 1; }
    # the other guest had this address with another MAC a moment ago
    ip neigh flush dev xenbr0 2>/dev/null
    if [ "$_pg" = ballast ]; then
        boot ballast "disk=['$(disk_spec "$PV_LOOP")']" "vif=['$(vif_spec ballast)']" \
            "extra=\"ballast.ip=$PV_ADDR/24 ballast.blk=0 ballast.blkbench=$PV_DISK_MIB\""
    else
        boot linux-guest "disk=['$(disk_spec "$PV_LOOP")']" "vif=['$(vif_spec linux-guest)']"
    fi || { pv_missing "$_pg" "boot not ready: $(console_text "$_pg" | tail -n 3 | _oneline)"; pv_cleanup; return 1; }
    if [ "$_pg" = ballast ]; then pv_blk_ballast; else
        wait_console linux-guest 'linux-guest disks: xvda=' 30 >/dev/null
        pv_blk_linux
    fi
    if ! ping_wait $PV_ADDR 60; then
        pv_missing "$_pg" "$PV_ADDR does not answer ping" pv_sr_answer_ms pv_sr_lost pv_sr_gap_ms pv_ck_answer_ms pv_ck_lost pv_ck_gap_ms pv_mg_answer_ms pv_mg_lost pv_mg_gap_ms
        pv_cleanup; return 1
    fi
    ping_log_start $PV_ADDR
    sleep 2
    _pv_broken=
    for _k in sr ck mg; do
        if [ -n "$_pv_broken" ]; then pv_missing "$_pg" "$_pv_broken" "pv_${_k}_answer_ms" "pv_${_k}_lost" "pv_${_k}_gap_ms"; continue; fi
        pv_ping_op "$_pg" $_k || _pv_broken="not run: the $_k before it failed"
    done
    pv_cleanup
}
