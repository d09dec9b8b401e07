#!/bin/sh
# Cold migration, boot 1 of 2 (run with --disk FILE): save a 64 MiB ballast onto the raw virtio
# disk /dev/vda; boot 2 (cross-host-restore, another --dom0-mem so every machine frame differs)
# restores it. A small note with this host's figures goes to the disk at 280 MiB.
#   truncate -s 300M build/xhost.img
#   python3 tests/lab/run.py --disk build/xhost.img cross-host-save
#   python3 tests/lab/run.py --disk build/xhost.img --dom0-mem 1024M cross-host-restore
# needs: ballast
# timeout: 200
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
DISK=/dev/vda
NOTE_MB=280
IMG=/tmp/cross-host.img
IMAGES=$IMG

if [ -b "$DISK" ]; then
    sz=$(( $(cat /sys/block/vda/size) * 512 ))
    pass disk "$DISK is a block device of $sz bytes"
else
    fail disk "no $DISK (run.py --disk FILE; virtio modules: $(lsmod 2>/dev/null | grep -c virtio) loaded)"; exit 1
fi
dom0_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
log "host 1: dom0 MemTotal ${dom0_kb} kB, xl list 0: $(xl list 0 2>&1 | awk 'NR==2 {print "mem=" $3 "MiB"}'), $(xl info 2>&1 | awk '/^total_memory|^free_memory/ {printf "%s=%s ", $1, $3}')"
# wipe the note so a stale one from an earlier run cannot pass boot 2
dd if=/dev/zero of=$DISK bs=1M seek=$NOTE_MB count=1 conv=notrunc 2>/dev/null

expect_xl create create /lab/ballast.cfg 'memory=64' 'maxmem=64' $VCPUS_CFG || exit 1
ID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30
smp_ok vcpus-tick-before ballast
expect_console aspace-before ballast 'aspace: space 1: 64 pages verified' 30
passes=$(xs_wait_uint "$ID" data/selftest/pattern_passes 10)
tag="xhost-$(now_ms)"
xenstore-write "/local/domain/$ID/data/echo" "$tag"
expect_console echo-before ballast "echo: $tag\$" 10

console_mark ballast
how=direct
if timed_xl 120 save ballast "$DISK"; then
    pass save "xl save ballast $DISK in $XL_MS ms"
    log "xl save straight to $DISK: wall $XL_MS ms"
    bytes=unknown
else
    log "xl save to $DISK failed (rc=$_xrc); saving to $IMG and copying with dd"
    how=dd
    if ! xl domid ballast >/dev/null 2>&1; then fail save "ballast gone after a failed save to $DISK"; exit 1; fi
    if timed_xl 120 save ballast "$IMG"; then
        bytes=$(file_size "$IMG")
        t=$(now_ms)
        dd if="$IMG" of=$DISK bs=1M conv=notrunc,fsync 2>&1 | tail -n 1
        sync
        pass save "xl save to $IMG in $XL_MS ms ($bytes bytes), dd to $DISK in $(( $(now_ms) - t )) ms"
        log "xl save wall $XL_MS ms, image $bytes bytes, dd $(( $(now_ms) - t )) ms"
        rm -f "$IMG"
    else
        fail save "xl save rc=$_xrc: $XL_OUT"; exit 1
    fi
fi
sync
expect_console pinned ballast 'suspend: pinned 1 of 1 address spaces' 5
expect_gone saved-gone 10 ballast
hdr=$(dd if=$DISK bs=64 count=1 2>/dev/null | head -c 32 | tr -d '\000\n\r')
case $hdr in
"Xen saved domain"*) pass stream-on-disk "start of $DISK: $hdr" ;;
*) fail stream-on-disk "start of $DISK does not look like an xl save file: $hdr" ;;
esac
printf 'XHOSTNOTE how=%s dom0_kb=%s passes=%s tag=%s bytes=%s\n' "$how" "$dom0_kb" "$passes" "$tag" "$bytes" |
    dd of=$DISK bs=1M seek=$NOTE_MB conv=notrunc,sync 2>/dev/null
sync
note=$(dd if=$DISK bs=1M skip=$NOTE_MB count=1 2>/dev/null | head -n 1 | tr -d '\0')
case $note in XHOSTNOTE*) pass note "wrote note at ${NOTE_MB} MiB: $note" ;; *) fail note "note not read back: '$note'" ;; esac
