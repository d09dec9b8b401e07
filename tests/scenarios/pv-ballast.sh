#!/bin/sh
# ballast's own PV disk and network: a 128 MiB ballast created with a 64 MiB disk (an image on a
# loop device) and one vif on xenbr0, ballast.ip=10.0.0.2/24. blkfront and netfront connect
# (xl block-list / network-list say 4), the block self-test verifies its first pass, dom0 pings
# the guest and talks to its TCP and UDP echo on port 7, the guest's own ping toward dom0 gets
# replies. Then both devices are detached and attached again while the guest runs: the guest
# logs each, goes silent, answers again, and the self-test carries on over the new disk. After
# the shutdown dom0 finds every sector of the self-test's range well formed and naming itself.
# needs: ballast
# timeout: 300
. /lab/lib.sh
G=ballast
ADDR=10.0.0.2
IMG=$DISK_DIR/pv-ballast.img
OURS=$G
IMAGES=$IMG
LOOPS=
trap _scenario_exit EXIT

loop=$(disk_new "$IMG" 64) || { fail disk-image "$loop"; exit 1; }
LOOPS=$loop
t0=$(now_ms)
expect_xl create create /lab/ballast.cfg 'memory=128' 'maxmem=128' $VCPUS_CFG \
    "disk=['$(disk_spec "$loop")']" "vif=['$(vif_spec $G)']" "extra=\"ballast.ip=$ADDR/24\"" || exit 1
t1=$(now_ms)
id=$(domid $G)
expect_console blk-connected $G 'blkfront 51712: connected to dom0 \(64 MiB' 60
expect_console net-connected $G "netfront 0: connected to dom0, mac $(vif_mac $G)" 30
expect_console stack $G "net: $ADDR/24 on vif 0" 30
expect_pv_states connected $G "vbd[51712=4] vif[0=4]" 20
if ping_wait $ADDR 60; then
    pass ping "$ADDR answered $(( $(now_ms) - t0 )) ms after xl create began, $(( $(now_ms) - t1 )) ms after it returned: $(grep -m1 'bytes from' "$LAB_TMP/ping.out")"
else
    fail ping "$ADDR did not answer within 60 s: $(tail -n 3 "$LAB_TMP/ping.out" | _oneline)"
fi
expect_console blk-first-pass $G 'blk-selftest: disk 51712: first pass over 16 MiB verified' 60
tcp=$(echo "ballast-tcp-echo" | nc -w 3 $ADDR 7 2>&1)
if [ "$tcp" = "ballast-tcp-echo" ]; then pass tcp-echo "nc $ADDR 7 -> '$tcp'"; else fail tcp-echo "nc $ADDR 7 -> '$tcp'"; fi
sent=$(xs_wait_uint $id data/net/0/ping_sent 10)
got=$(xs_read $id data/net/0/ping_replies)
if is_uint "$got" && [ "$got" -gt 0 ]; then pass guest-ping "the guest pinged dom0: $got replies of $sent sent"
else fail guest-ping "data/net/0/ping_replies = '$got' (sent '$sent')"; fi

# detach both while the guest runs
console_mark $G
expect_xl block-detach block-detach $G xvda
expect_console blk-detached $G 'blkfront 51712: detached' 20
expect_xl network-detach network-detach $G 0
expect_console net-detached $G 'netfront 0: detached' 20
expect_pv_states detached $G "vbd[] vif[]" 20
if ping -c 2 -W 1 $ADDR >"$LAB_TMP/ping-gone.out" 2>&1; then fail no-ping "$ADDR still answers"
else pass no-ping "$ADDR silent with the vif detached"; fi
running running-detached $G
passes=$(xs_read $id data/blk/51712/passes)

# ...and attach them again
console_mark $G
ta=$(now_ms)
expect_xl block-attach block-attach $G "$(disk_spec "$loop")"
expect_console blk-back $G 'blkfront 51712: connected to dom0' 30
expect_xl network-attach network-attach $G $(vif_spec $G | tr ',' ' ')
expect_console net-back $G 'netfront 0: connected to dom0' 30
expect_pv_states reconnected $G "vbd[51712=4] vif[0=4]" 20
if ping_wait $ADDR 30; then pass ping-again "$ADDR answered $(( $(now_ms) - ta )) ms after block-attach began"
else fail ping-again "$ADDR did not answer within 30 s of the attach"; fi
if wait_until 60 _xs_uint_above $id data/blk/51712/passes "${passes:-0}"; then
    pass selftest-again "self-test passes $passes -> $_v on the attached disk"
else fail selftest-again "data/blk/51712/passes stays '$_v' (was $passes)"; fi
for n in mismatches duplicates errors; do
    v=$(xs_read $id data/blk/51712/$n)
    if [ "$v" = 0 ]; then pass "blk-$n" "data/blk/51712/$n = 0"; else fail "blk-$n" "data/blk/51712/$n = '$v'"; fi
done
no_damage no-damage $G
# a detach ends every grant: the backend unmapped the rings before they were dropped
leaks=$(console_text $G | grep -c 'page leaked')
if [ "$leaks" = 0 ]; then pass no-page-leaked "no shared page leaked across the detaches and attaches"
else fail no-page-leaked "$leaks shared page(s) leaked: $(console_text $G | grep -m 3 'page leaked' | _oneline)"; fi

# a clean shutdown, then dom0 checks the image: every sector of the range names itself
console_mark $G
expect_xl shutdown shutdown $G
expect_gone gone 30 $G
disk_sectors_ok image-sectors "$IMG" 32768
