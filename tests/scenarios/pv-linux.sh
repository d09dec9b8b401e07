#!/bin/sh
# The lab's PV disk and network plumbing, with the reference Linux guest (xen-blkfront,
# xen-netfront) as the frontend: a 64 MiB image on a loop device and one vif on xenbr0 attach at
# `xl create` and connect (state 4); a sector line goes each way and dom0 pings the guest; both
# are detached and attached again while the guest runs; a save + restore (the save image in /tmp
# beside the disk) reconnects them; after the destroy the hotplug scripts have run both ways and
# the loop device is free.
# needs: linux-guest
# timeout: 240
. /lab/lib.sh
G=linux-guest
ADDR=10.0.0.2
IMG=$DISK_DIR/pv-linux.img
OURS=$G
IMAGES=$IMG
LOOPS=
trap _scenario_exit EXIT

# guest_says NAME REGEX CMD: type CMD on the guest's shell; its answer matches REGEX (anchored
# at the line's start, so the echoed command line does not count)
guest_says() {
    console_mark $G
    _ty=$(console_type $G "$3") || { fail "$1" "$_ty"; return 1; }
    expect_console "$1" $G "^$2" 20
}

loop=$(disk_new "$IMG" 64) || { fail disk-image "$loop"; exit 1; }
LOOPS=$loop
pass disk-image "$IMG ($(file_size "$IMG") bytes) on $loop ($(stat -L -c %t:%T "$loop")); $DISK_DIR has $(fs_free_mib "$DISK_DIR") MiB free"
# a save image of the 256 MiB guest must still fit in /tmp beside the disk (256.5 MB, facts file)
free_tmp=$(fs_free_mib /tmp)
if [ "$free_tmp" -ge 260 ]; then pass tmp-room "/tmp has $free_tmp MiB free for a 256 MiB save image"
else fail tmp-room "/tmp has only $free_tmp MiB free, a 256 MiB save image needs ~250"; fi
disk_put_line "$IMG" 6 "ballast-blk sector=6 gen=7"

cfg=$LAB_TMP/pv-linux.cfg
{
    cat /lab/linux-guest.cfg
    echo "disk = [ '$(disk_spec "$loop")' ]"
    echo "vif = [ '$(vif_spec $G)' ]"
} >"$cfg"
sed 's/^/[cfg] /' "$cfg"

t0=$(now_ms)
expect_xl create create "$cfg" || exit 1
t1=$(now_ms)
id=$(domid $G)
expect_console banner $G 'linux-guest ready' 60
if ping_wait $ADDR 60; then
    t2=$(now_ms)
    pass ping "$ADDR answered $((t2 - t0)) ms after xl create began, $((t2 - t1)) ms after it returned: $(grep -m1 'bytes from' "$LAB_TMP/ping.out")"
else
    fail ping "$ADDR did not answer within 60 s: $(tail -n 3 "$LAB_TMP/ping.out" | _oneline)"
fi
expect_console xvda $G 'linux-guest disks: xvda=65536KiB' 30
expect_console eth0 $G "linux-guest net: eth0 $ADDR/24 up mac=$(vif_mac $G)" 10
expect_pv_states connected $G "vbd[51712=4] vif[0=4]" 20
brif=$(ls /sys/class/net/xenbr0/brif 2>&1 | tr '\n' ' ')
case " $brif " in *" vif$id.0 "*) pass bridged "xenbr0 ports: $brif" ;; *) fail bridged "vif$id.0 not on xenbr0, ports: $brif" ;; esac

# data both ways: the guest reads the line dom0 put in sector 6 and writes one to sector 5
guest_says read-sector 'rd6=ballast-blk sector=6 gen=7' 'echo "rd6=$(dd if=/dev/xvda bs=512 skip=6 count=1 2>/dev/null | head -n 1)"'
guest_says write-sector 'wr5=0' 'printf "ballast-blk sector=5 gen=1\n" | dd of=/dev/xvda bs=512 seek=5 count=1 conv=sync,fsync 2>/dev/null; echo "wr5=$?"'
l5=$(disk_line "$IMG" 5)
if [ "$l5" = "ballast-blk sector=5 gen=1" ]; then pass image-sector "dom0 reads sector 5 of $IMG: $l5"
else fail image-sector "sector 5 of $IMG reads '$l5'"; fi

# detach both while the guest runs
console_mark $G
expect_xl block-detach block-detach $G xvda
expect_console guest-disk-gone $G 'linux-guest uevent: remove xvda' 20
expect_xl network-detach network-detach $G 0
expect_console guest-eth0-gone $G 'linux-guest uevent: remove eth0' 20
expect_pv_states detached $G "vbd[] vif[]" 20
if ping -c 2 -W 1 $ADDR >"$LAB_TMP/ping-gone.out" 2>&1; then fail no-ping "$ADDR still answers: $(grep -m1 'bytes from' "$LAB_TMP/ping-gone.out")"
else pass no-ping "$ADDR silent with the vif detached: $(tail -n 2 "$LAB_TMP/ping-gone.out" | _oneline)"; fi
if loop_bound "$loop"; then pass loop-kept "$loop still holds $(cat /sys/block/${loop##*/}/loop/backing_file)"
else fail loop-kept "$loop lost its file at block-detach"; fi

# ...and attach them again
console_mark $G
ta=$(now_ms)
expect_xl block-attach block-attach $G "$(disk_spec "$loop")"
expect_console guest-disk-back $G 'linux-guest uevent: add xvda 131072 sectors' 20
tn=$(now_ms)
# network-attach takes the spec's key=value items as separate arguments
expect_xl network-attach network-attach $G $(vif_spec $G | tr ',' ' ')
expect_console guest-eth0-back $G "linux-guest net: eth0 $ADDR/24 up mac=$(vif_mac $G)" 20
expect_pv_states reconnected $G "vbd[51712=4] vif[0=4]" 20
if ping_wait $ADDR 30; then
    pass ping-again "$ADDR answered $(( $(now_ms) - tn )) ms after network-attach began ($(( $(now_ms) - ta )) ms after block-attach): $(grep -m1 'bytes from' "$LAB_TMP/ping.out")"
else
    fail ping-again "$ADDR did not answer within 30 s of the attach: $(tail -n 3 "$LAB_TMP/ping.out" | _oneline)"
fi
guest_says sector-kept 'rd5=ballast-blk sector=5 gen=1' 'echo "rd5=$(dd if=/dev/xvda bs=512 skip=5 count=1 2>/dev/null | head -n 1)"'

# save + restore with the disk attached: the 256 MiB image fits in /tmp beside the 64 MiB disk,
# and the restored guest's devices reconnect through the same scripts
SAVE=$LAB_TMP/pv-linux.save
IMAGES="$IMG $SAVE"
if timed_xl 60 save $G "$SAVE"; then
    pass save "xl save in $XL_MS ms: $(file_size "$SAVE") bytes in /tmp ($(fs_free_mib /tmp) MiB left)"
    if timed_xl 60 restore "$SAVE"; then
        tr=$(now_ms)
        pass restore "xl restore in $XL_MS ms, domid $(domid $G)"
        if ping_wait $ADDR 30; then
            pass ping-restored "$ADDR answered $(( $(now_ms) - tr )) ms after xl restore returned: $(grep -m1 'bytes from' "$LAB_TMP/ping.out")"
        else
            fail ping-restored "$ADDR did not answer within 30 s of the restore: $(tail -n 3 "$LAB_TMP/ping.out" | _oneline)"
        fi
        expect_pv_states restored-connected $G "vbd[51712=4] vif[0=4]" 20
        guest_says restored-sector 'rd5=ballast-blk sector=5 gen=1' 'echo "rd5=$(dd if=/dev/xvda bs=512 skip=5 count=1 2>/dev/null | head -n 1)"'
    else
        fail restore "xl restore -> rc=$_xrc $XL_OUT"
    fi
else
    fail save "xl save -> rc=$_xrc $XL_OUT; /tmp: $(fs_free_mib /tmp) MiB free"
fi
rm -f "$SAVE"
id2=$(domid $G)

destroy_gone destroy gone 20 $G

# every action ran the lab's scripts once each: add/online at create, attach and restore,
# remove/offline at detach, save and destroy
hp=$(hotplug_lines)
n_add=$(printf '%s\n' "$hp" | grep -c " block add $loop .*: ok")
n_rm=$(printf '%s\n' "$hp" | grep -c " block remove $loop .*: ok")
n_on=$(printf '%s\n' "$hp" | grep -c " vif online vif[0-9]*\.0 .*: ok")
n_off=$(printf '%s\n' "$hp" | grep -c " vif offline vif[0-9]*\.0 .*: ok")
if [ "$n_add $n_rm $n_on $n_off" = "3 3 3 3" ]; then
    pass hotplug "block add/remove $n_add/$n_rm, vif online/offline $n_on/$n_off ($(printf '%s\n' "$hp" | grep -c .) lines)"
else
    fail hotplug "block add/remove $n_add/$n_rm, vif online/offline $n_on/$n_off, want 3 each: $(printf '%s\n' "$hp" | tail -n 8 | _oneline)"
fi
ports=$(ls /sys/class/net/xenbr0/brif 2>&1 | tr '\n' ' ')
case " $ports " in
*" vif$id."* | *" vif$id2."*) fail bridge-clean "xenbr0 still has a port of domid $id or $id2: $ports" ;;
*) pass bridge-clean "xenbr0 ports after destroy: [$ports]" ;;
esac

expect disk-free disk_free "$loop"
_loop_free() { ! loop_bound "$1"; }
if wait_until 10 _loop_free "$loop"; then pass loop-freed "$loop has no file: $(losetup -a 2>&1 | _oneline)"
else fail loop-freed "$loop still bound: $(losetup -a 2>&1 | _oneline)"; fi
LOOPS=
