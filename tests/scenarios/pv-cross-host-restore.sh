#!/bin/sh
# Cold migration of a guest with a disk and a network, boot 2 of 2: the disk image pv-cross-host-save
# copied to /dev/vda goes on a loop device of this host (another dom0 size, so every machine frame
# differs), dom0 starts pinging 10.0.0.2 10 times a second, and `xl restore /dev/vda` brings the
# guest back: blkfront and netfront reconnect to this host's backends (every request in flight at
# the save issued again), the guest answers within 1 s of xl returning, announces itself with a
# gratuitous ARP, its own ping loses at most 1, and its self-test goes on with 0 mismatches; after
# the shutdown every sector names itself.
# needs: ballast
# timeout: 240
. /lab/lib.sh
G=ballast
ADDR=10.0.0.2
DISK=/dev/vda
DISK_AT_MB=150
NOTE_MB=280
IMG=$DISK_DIR/xh.img
OURS=$G
IMAGES=$IMG
LOOPS=
trap _scenario_exit EXIT

[ -b "$DISK" ] || { fail disk "no $DISK (run.py --disk FILE)"; exit 1; }
note=$(dd if=$DISK bs=1M skip=$NOTE_MB count=1 2>/dev/null | head -n 1 | tr -d '\0')
case $note in
XHOSTPV*) pass note "note from host 1: $note" ;;
*) fail note "no note from pv-cross-host-save: '$note'"; exit 1 ;;
esac
want_loop=$(printf '%s\n' "$note" | sed -n 's/.*loop=\([^ ]*\).*/\1/p')
lost0=$(printf '%s\n' "$note" | sed -n 's/.*lost=\([0-9]*\).*/\1/p')
kb1=$(printf '%s\n' "$note" | sed -n 's/.*dom0_kb=\([0-9]*\).*/\1/p')
dom0_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
[ "$dom0_kb" != "$kb1" ] && pass other-host "dom0 MemTotal $dom0_kb kB here, $kb1 kB on host 1" ||
    fail other-host "dom0 has the same size ($dom0_kb kB) as on host 1"
dd if=$DISK of="$IMG" bs=1M skip=$DISK_AT_MB count=64 2>/dev/null
loop=$(losetup -f) && losetup "$loop" "$IMG" || { fail disk-image "no loop device"; exit 1; }
LOOPS=$loop
if [ "$loop" = "$want_loop" ]; then pass disk-image "the image is on $loop again, as the saved config names it"
else fail disk-image "the image is on $loop, the saved config names $want_loop"; exit 1; fi

ping_log_start $ADDR
if timed_xl 120 restore "$DISK"; then pass restore "xl restore $DISK in $XL_MS ms"
else fail restore "xl restore rc=$_xrc: $XL_OUT"; exit 1; fi
t_end=$(now_ms)
id=$(domid $G)
expect_console resumed $G 'suspend: done: Resumed' 30
if ping_log_answer_after "$t_end" 20; then
    set -- $(ping_log_since "$t_end" "$t_end")
    if [ "$1" -le 1000 ]; then pass answers-within-1s "answered $1 ms after xl restore returned"
    else fail answers-within-1s "answered $1 ms after xl restore returned"; fi
else
    fail answers-within-1s "no answer within 20 s of xl restore returning"
fi
expect_console blk-reconnected $G 'blkfront 51712: connected to dom0 .* request\(s\) issued again' 20
expect_console garp $G 'net: gratuitous ARP for 10.0.0.2 sent after the resume' 20
sleep 3
lost1=$(xs_read $id data/net/0/ping_lost)
if is_uint "$lost1" && [ $((lost1 - ${lost0:-0})) -le 1 ]; then pass guest-ping "ping_lost $lost0 -> $lost1"
else fail guest-ping "ping_lost $lost0 -> $lost1"; fi
p=$(xs_read $id data/blk/51712/passes)
if wait_until 60 _xs_uint_above $id data/blk/51712/passes "${p:-0}"; then pass selftest-goes-on "passes $p -> $_v"
else fail selftest-goes-on "passes stay at '$_v'"; fi
blk_clean blk $id 51712
no_damage no-damage $G
expect_xl shutdown shutdown $G
expect_gone gone 30 $G
disk_sectors_ok image-sectors "$IMG" 32768
