#!/bin/sh
# Cold migration of a guest with a disk and a network, boot 1 of 2 (run with --disk FILE): a 128 MiB
# ballast with a 64 MiB disk and a vif (10.0.0.2/24) runs its block self-test and answers ping; it
# is saved onto the raw virtio disk /dev/vda while I/O is in flight, then its disk image is copied
# there too (at 150 MiB) with a note (at 280 MiB). Boot 2 (pv-cross-host-restore, another
# --dom0-mem) restores both on another host.
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
dd if=/dev/zero of=$DISK bs=1M seek=$NOTE_MB count=1 conv=notrunc 2>/dev/null
loop=$(disk_new "$IMG" 64) || { fail disk-image "$loop"; exit 1; }
LOOPS=$loop
expect_xl create create /lab/ballast.cfg 'memory=128' 'maxmem=128' $VCPUS_CFG \
    "disk=['$(disk_spec "$loop")']" "vif=['$(vif_spec $G)']" "extra=\"ballast.ip=$ADDR/24\"" || exit 1
id=$(domid $G)
expect_console blk-first-pass $G 'blk-selftest: disk 51712: first pass over 16 MiB verified' 90 || exit 1
ping_wait $ADDR 60 && pass ping "$ADDR answers" || fail ping "$ADDR does not answer"
sleep 2
passes=$(xs_read $id data/blk/51712/passes)
lost=$(xs_read $id data/net/0/ping_lost)
console_mark $G
if timed_xl 120 save $G "$DISK"; then pass save "xl save $G $DISK in $XL_MS ms"
else fail save "xl save rc=$_xrc: $XL_OUT"; exit 1; fi
l=$(console_text $G | grep -E 'blkfront 51712: suspended, [0-9]+ request' | tail -n 1)
log "at the save: $l"
wait_gone $G 10
disk_sectors_ok image-at-save "$IMG" 32768
t=$(now_ms)
dd if="$IMG" of=$DISK bs=1M seek=$DISK_AT_MB conv=notrunc,fsync 2>/dev/null
pass disk-copied "64 MiB image to $DISK at $DISK_AT_MB MiB in $(( $(now_ms) - t )) ms"
printf 'XHOSTPV loop=%s passes=%s lost=%s dom0_kb=%s\n' "$loop" "$passes" "$lost" \
    "$(awk '/MemTotal/ {print $2}' /proc/meminfo)" | dd of=$DISK bs=1M seek=$NOTE_MB conv=notrunc,sync 2>/dev/null
sync
