#!/bin/sh
# vcpus = 4: every vCPU starts and works (xl vcpu-list shows 4, every data/vcpu/<n>/ticks advances,
# each vCPU's pinned pattern verifies on that vCPU, movers hop between vCPUs), then three xl save +
# xl restore rounds: each suspend stops the 3 other vCPUs at the rendezvous, and after each restore
# every vCPU ticks again and every pattern is intact.
# needs: ballast
# timeout: 420
. /lab/lib.sh

OURS=ballast
IMAGES=
trap _scenario_exit EXIT
IMG=/tmp/smp.img
IMAGES=$IMG

expect_xl create create /lab/ballast.cfg 'vcpus=4' || exit 1
ID=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
expect_console smp-possible ballast 'smp: the domain has 4 vCPUs' 5
expect_console vcpu3-online ballast 'smp: vCPU 3 online \(4 online\)' 20
n=$(vcpu_list_count ballast); o=$(vcpus_online_count ballast)
if [ "$n" = 4 ] && [ "$o" = 4 ]; then pass vcpu-list "xl vcpu-list: $n vCPUs, $o online"
else fail vcpu-list "xl vcpu-list: $n vCPUs, $o online: $(xl vcpu-list ballast 2>&1 | tr '\n' ' ')"; fi
vcpus_tick ticks-boot "$ID" 4
expect_console vcpu3-pattern ballast 'selftest: vCPU 3 pattern verified on vCPU 3' 20
expect_console movers ballast 'selftest: mover [0-9] made [0-9]+ moves' 40
pattern_ok pattern-boot ballast 30

round=1
while [ $round -le 3 ]; do
    console_mark ballast
    if timed_xl 120 save ballast "$IMG"; then
        pass save-$round "xl save in $XL_MS ms, image $(file_size "$IMG") bytes"
    else
        fail save-$round "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
    fi
    expect_console quiesced-$round ballast 'suspend: quiesced 3 other vCPUs' 5
    console_mark ballast
    if timed_xl 120 restore "$IMG"; then pass restore-$round "xl restore in $XL_MS ms"
    else fail restore-$round "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
    rm -f "$IMG"
    ID=$(domid ballast)
    if l=$(wait_console ballast 'suspend: done: Resumed' 30); then pass done-$round "$(printf '%s\n' "$l" | done_figures)"
    else fail done-$round "no 'suspend: done: Resumed'; tail: $(console_text ballast | tail -n 5 | _oneline)"; fi
    o=$(vcpus_online_count ballast)
    [ "$o" = 4 ] && pass online-$round "xl vcpu-list: 4 online after restore" ||
        fail online-$round "xl vcpu-list: $o online: $(xl vcpu-list ballast 2>&1 | tr '\n' ' ')"
    vcpus_tick ticks-$round "$ID" 4
    expect_console vcpu3-pattern-$round ballast 'selftest: vCPU 3 pattern verified on vCPU 3' 20
    pattern_ok pattern-$round ballast 40
    round=$((round + 1))
done
m=$(xs_read "$ID" data/selftest/moves); e=$(xs_read "$ID" data/selftest/move_errors)
if is_uint "$m" && [ "$m" -gt 0 ] && [ "$e" = 0 ]; then pass moves "data/selftest/moves=$m, move_errors=$e"
else fail moves "data/selftest/moves='$m', move_errors='$e'"; fi
no_damage no-damage ballast
destroy_gone destroy gone 15 ballast
