#!/bin/sh
# A disk and a network that ride through every suspend: a 128 MiB ballast with a 64 MiB disk and
# one vif (ballast.ip=10.0.0.2/24) goes through CYCLES (25) mixed cycles: xl save + xl restore,
# xl save -c (checkpoint) and live xl migrate, in turn, while its block self-test keeps I/O in
# flight and dom0 pings it 10 times a second. After each: the guest answers dom0 again (how long
# after xl returned, how many requests were lost, the longest gap without replies), its own ping
# toward dom0 lost at most one, and the self-test goes on. A TCP connection to the echo port held
# open across a checkpoint keeps working; after a restore a new one works. At the end: 0
# mismatches, 0 duplicate completions, every request in flight at a resume issued again, and
# after the shutdown dom0 finds every sector of the self-test's range well formed and naming
# itself.
# needs: ballast
# timeout: 900
. /lab/lib.sh
G=ballast
ADDR=10.0.0.2
IMG=$DISK_DIR/pv-cycles.img
SAVE=/tmp/pv-cycles.save
OURS="$G $G--incoming $G--migratedaway"
IMAGES="$IMG $SAVE"
LOOPS=
trap _scenario_exit EXIT
CYCLES=${CYCLES:-25}
MEM=${PV_MEM:-128}

loop=$(disk_new "$IMG" 64) || { fail disk-image "$loop"; exit 1; }
LOOPS=$loop
expect_xl create create /lab/ballast.cfg "memory=$MEM" "maxmem=$MEM" $VCPUS_CFG \
    "disk=['$(disk_spec "$loop")']" "vif=['$(vif_spec $G)']" "extra=\"ballast.ip=$ADDR/24\"" || exit 1
expect_console blk-first-pass $G 'blk-selftest: disk 51712: first pass over 16 MiB verified' 90 || exit 1
ping_wait $ADDR 60 || { fail ping "$ADDR does not answer"; exit 1; }
ping_log_start $ADDR
tcp_open $ADDR

# cycle_ping KIND END_MS: the dom0 ping after an operation that xl ended at END_MS
cycle_ping() {
    if ! ping_log_answer_after "$2" 20; then
        eval "${1}_late=\$((${1}_late + 1))"; ping_broken="$ping_broken $1@$i:no-answer-in-20s"; return
    fi
    set -- "$1" "$2" $(ping_log_since "$op_start" "$2")  # after_ms lost gap_ms
    eval "${1}_after_max=\$(( $3 > ${1}_after_max ? $3 : ${1}_after_max ))"
    eval "${1}_lost=\$((${1}_lost + $4)); ${1}_gap_max=\$(( $5 > ${1}_gap_max ? $5 : ${1}_gap_max ))"
    eval "${1}_n=\$((${1}_n + 1))"
    [ "$3" -le 1000 ] || eval "${1}_late=\$((${1}_late + 1))"
    log "cycle $i $1: answered ${3} ms after xl returned, ${4} lost, longest gap ${5} ms"
}
sr_n=0 sr_late=0 sr_lost=0 sr_gap_max=0 sr_after_max=0
ck_n=0 ck_late=0 ck_lost=0 ck_gap_max=0 ck_after_max=0
mg_n=0 mg_late=0 mg_lost=0 mg_gap_max=0 mg_after_max=0
ping_broken= guest_broken= broken= done_n=0 tcp_ok=no new_tcp_ok=no
i=1
while [ $i -le $CYCLES ]; do
    id=$(domid $G)
    lost0=$(xs_read $id data/net/0/ping_lost)
    # a restored domain logs under its own name again, not a migration's alias
    [ $((i % 3)) -eq 1 ] && rm -f "$LAB_TMP/alias-$G"
    console_mark $G
    op_start=$(now_ms)
    case $((i % 3)) in
    1)  kind=sr
        timed_xl 120 save $G "$SAVE" || { broken="cycle $i: xl save rc=$_xrc: $XL_OUT"; break; }
        wait_gone $G 10 || { broken="cycle $i: still listed after xl save"; break; }
        timed_xl 120 restore "$SAVE" || { broken="cycle $i: xl restore rc=$_xrc: $XL_OUT"; break; }
        rm -f "$SAVE" ;;
    2)  kind=ck
        timed_xl 120 save -c $G "$SAVE" || { broken="cycle $i: xl save -c rc=$_xrc: $XL_OUT"; break; }
        rm -f "$SAVE" ;;
    0)  kind=mg
        migrate $G 120 || { broken="cycle $i: xl migrate rc=$_xrc: $(printf '%s\n' "$XL_OUT" | tail -n 3)"; break; } ;;
    esac
    op_end=$(now_ms)
    wait_console $G 'suspend: done: (Resumed|Cancelled)' 30 >/dev/null ||
        { broken="cycle $i ($kind): no 'suspend: done' line"; break; }
    cycle_ping $kind $op_end
    id=$(domid $G)
    # the guest's own ping: wait for its figures to move past the operation
    sleep 2
    lost1=$(xs_read $id data/net/0/ping_lost)
    if is_uint "$lost0" && is_uint "$lost1" && [ $((lost1 - lost0)) -le 1 ]; then :
    else guest_broken="$guest_broken $kind@$i:${lost0}->${lost1}"; fi
    if [ $kind = ck ] && [ $tcp_ok = no ]; then
        tcp_says "after-checkpoint-$i" && tcp_ok=yes
    fi
    if [ $kind = sr ] && [ $new_tcp_ok = no ]; then
        r=$(echo "new-after-restore-$i" | nc -w 3 $ADDR 7 2>&1)
        [ "$r" = "new-after-restore-$i" ] && new_tcp_ok=yes
        log "new TCP connection after restore $i: '$r'"
    fi
    done_n=$i
    log "cycle $i/$CYCLES $kind done (domid $id), xl ${XL_MS} ms, self-test passes $(xs_read $id data/blk/51712/passes)"
    i=$((i + 1))
done
if [ -n "$broken" ]; then fail cycles "$broken (after $done_n good cycles)"
else pass cycles "$done_n cycles: $sr_n save+restore, $ck_n checkpoints, $mg_n migrations"; fi
running running $G
id=$(domid $G)

figures="save+restore: answered <= ${sr_after_max} ms after xl returned, ${sr_lost} lost in ${sr_n}, longest gap ${sr_gap_max} ms;"
figures="$figures checkpoint: <= ${ck_after_max} ms, ${ck_lost} lost in ${ck_n}, gap ${ck_gap_max} ms;"
figures="$figures migrate: <= ${mg_after_max} ms, ${mg_lost} lost in ${mg_n}, gap ${mg_gap_max} ms"
log "figures: $figures"
if [ $((sr_late + mg_late)) -eq 0 ] && [ -z "$ping_broken" ]; then pass answers-within-1s "$figures"
else fail answers-within-1s "late: save+restore $sr_late, migrate $mg_late;$ping_broken; $figures"; fi
if [ "$ck_lost" -eq 0 ] && [ "$ck_late" -eq 0 ]; then pass checkpoint-loses-nothing "$ck_lost of dom0's requests lost across $ck_n checkpoints"
else fail checkpoint-loses-nothing "$ck_lost lost across $ck_n checkpoints ($ck_late late)"; fi
if [ -z "$guest_broken" ]; then pass guest-ping "the guest's ping lost at most 1 per operation: data/net/0 ping_sent=$(xs_read $id data/net/0/ping_sent) ping_replies=$(xs_read $id data/net/0/ping_replies) ping_lost=$(xs_read $id data/net/0/ping_lost) skipped=$(xs_read $id data/net/0/ping_skipped)"
else fail guest-ping "more than 1 lost:$guest_broken"; fi
[ $tcp_ok = yes ] && pass tcp-across-checkpoint "a connection opened before the first checkpoint echoed after it" ||
    fail tcp-across-checkpoint "the held TCP connection did not echo after a checkpoint: $(cat "$TCP_OUT" | _oneline)"
[ $new_tcp_ok = yes ] && pass tcp-after-restore "a new TCP connection echoed after a restore" ||
    fail tcp-after-restore "no new TCP connection echoed after any restore"
blk_clean blk $id 51712
reissued=$(xs_read $id data/blk/51712/reissued)
log "block: $(blk_figures $id 51712)"
no_damage no-damage $G
console_mark $G
expect_xl shutdown shutdown $G
expect_gone gone 30 $G
disk_sectors_ok image-sectors "$IMG" 32768
