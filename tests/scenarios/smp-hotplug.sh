#!/bin/sh
# vCPU hotplug through xl vcpu-set (cpu/<n>/availability): a vcpus=4 guest goes 4 -> 1 (the three
# vCPUs stop, their ticks stand still, their pinned tasks run on vCPU 0), is saved and restored
# with 1 online (the online set survives), goes back to 4 (every vCPU ticks, vCPU 3's pattern runs
# on vCPU 3 again); an xl save issued while an xl vcpu-set runs succeeds and the restored guest
# ends with the set dom0 asked for. Then a guest booted with vcpus=2, maxvcpus=8 is brought to 8.
# needs: ballast
# timeout: 400
. /lab/lib.sh

OURS=ballast
IMAGES=
trap _scenario_exit EXIT
IMG=/tmp/hotplug.img
IMAGES=$IMG

save_restore() { # TAG: xl save + xl restore of ballast; ID is the new domid
    if timed_xl 120 save ballast "$IMG"; then pass "save-$1" "xl save in $XL_MS ms"
    else fail "save-$1" "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
    if timed_xl 120 restore "$IMG"; then pass "restore-$1" "xl restore in $XL_MS ms"
    else fail "restore-$1" "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
    rm -f "$IMG"
    ID=$(domid ballast)
    expect_console "resumed-$1" ballast 'suspend: done: Resumed' 30
}
online_is() { # NAME N: the guest reports N online and xl vcpu-list agrees
    v=$(xs_wait_eq "$ID" data/vcpu/online "$2" 20)
    o=$(vcpus_online_count ballast)
    if [ "$v" = "$2" ] && [ "$o" = "$2" ]; then pass "$1" "data/vcpu/online = $v, xl vcpu-list: $o online"
    else fail "$1" "data/vcpu/online '$v', xl vcpu-list $o online, expected $2: $(xl vcpu-list ballast 2>&1 | _oneline)"; fi
}

expect_xl create create /lab/ballast.cfg 'vcpus=4' || exit 1
ID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
online_is online-4 4
vcpus_tick ticks-4 "$ID" 4

# ---- 4 -> 1
console_mark ballast
expect_xl vcpu-set-1 vcpu-set --ignore-host ballast 1
expect_console offline-3 ballast 'smp: vCPU 3 offline' 20
online_is online-1 1
vcpus_tick ticks-vcpu0 "$ID" 4 "0"
t1=$(vcpu_ticks "$ID" 4); sleep 2; t2=$(vcpu_ticks "$ID" 4)
if [ "$(echo "$t1" | cut -d' ' -f2-)" = "$(echo "$t2" | cut -d' ' -f2-)" ]; then
    pass offline-still "ticks of vCPUs 1-3 stand still: [$t1] -> [$t2]"
else
    fail offline-still "ticks of offline vCPUs moved: [$t1] -> [$t2]"
fi
expect_console pattern3-elsewhere ballast 'selftest: vCPU 3 pattern verified on vCPU 0' 30

# ---- save/restore with one vCPU online: the set survives
console_mark ballast
save_restore one
online_is online-1-restored 1
vcpus_tick ticks-vcpu0-restored "$ID" 4 "0"
pattern_ok pattern-one ballast 40

# ---- 1 -> 4
console_mark ballast
expect_xl vcpu-set-4 vcpu-set --ignore-host ballast 4
expect_console online-3-again ballast 'smp: vCPU 3 online' 20
online_is online-4-again 4
vcpus_tick ticks-4-again "$ID" 4
expect_console pattern3-home ballast 'selftest: vCPU 3 pattern verified on vCPU 3' 30

# ---- xl save while an xl vcpu-set runs
console_mark ballast
xl vcpu-set --ignore-host ballast 2 >/tmp/vcpuset.out 2>&1 &
setpid=$!
save_restore during-vcpu-set
wait $setpid; log "xl vcpu-set 2 (run alongside the save): rc=$? $(_oneline </tmp/vcpuset.out)"
online_is online-2-after 2
vcpus_tick ticks-2-after "$ID" 4 "0 1"
pattern_ok pattern-after-set ballast 40
no_damage no-damage ballast
destroy_gone destroy gone 15 ballast

# ---- vcpus=2, maxvcpus=8 -> 8
console_mark ballast
expect_xl create-2of8 create /lab/ballast.cfg 'vcpus=2' 'maxvcpus=8' || exit 1
ID=$(domid ballast)
expect_console possible-8 ballast 'smp: the domain has 8 vCPUs' 40
online_is online-2of8 2
expect_xl vcpu-set-8 vcpu-set --ignore-host ballast 8
online_is online-8 8
vcpus_tick ticks-8 "$ID" 8
console_mark ballast
pattern_ok pattern-8 ballast 40
no_damage no-damage-8 ballast
destroy_gone destroy-8 gone-8 15 ballast
