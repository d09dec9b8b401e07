#!/bin/sh
# 50 random `xl mem-set` targets between 32 and 256 MiB, back to back without waiting: the balloon
# picks up the newest target between chunks and ends at the last one (console line, `xl list` Mem
# within 1 MiB, data/balloon/current_kb), with the self-test pattern intact.
# needs: ballast
# timeout: 240
. /lab/lib.sh
OURS=ballast
IMAGES=
trap _scenario_exit EXIT


console_mark ballast
expect_xl create create /lab/ballast.cfg || exit 1
expect_console balloon-up ballast 'balloon: target [0-9]+ KiB -> current [0-9]+ KiB' 60 || exit 1

seed=$(now_ms)
targets=$(awk -v s="$seed" 'BEGIN { srand(s); for (i = 0; i < 50; i++) printf "%d ", 32 + int(rand() * 225) }')
log "seed $seed, targets (MiB): $targets"
console_mark ballast
t0=$(now_ms)
n=0 bad=0
for mib in $targets; do
    xl mem-set ballast "${mib}m" >/dev/null 2>&1 || bad=$((bad + 1))
    n=$((n + 1)); last=$mib
done
t_storm=$(( $(now_ms) - t0 ))
if [ $bad -eq 0 ]; then pass storm "$n xl mem-set calls in $t_storm ms"; else fail storm "$bad of $n xl mem-set calls failed"; fi

kb=$((last * 1024))
# Converged: the guest reports the last target reached, and Xen agrees.
converged() { cur=$(xs_read ballast data/balloon/current_kb); tgt=$(xs_read ballast data/balloon/target_kb); [ "$cur" = "$kb" ] && [ "$tgt" = "$kb" ]; }
wait_until 90 converged
settle=$(( $(now_ms) - t0 - t_storm ))
if [ "$cur" = "$kb" ] && [ "$tgt" = "$kb" ]; then
    pass converged "data/balloon current_kb=$cur target_kb=$tgt = last target $last MiB, $settle ms after the last xl mem-set"
else
    fail converged "data/balloon current_kb='$cur' target_kb='$tgt', last target $kb KiB"
fi
line=$(wait_console ballast "balloon: target $kb KiB -> current $kb KiB in [0-9]+ ms" 5)
if [ -n "$line" ]; then pass console "$line"; else fail console "no reconciliation line for $kb KiB"; fi
xm=$(xl_mem_of ballast); d=$(( xm - last )); [ $d -lt 0 ] && d=$(( -d ))
if [ -n "$xm" ] && [ $d -le 1 ]; then pass xl-list "xl list Mem $xm MiB, last target $last MiB"
else fail xl-list "xl list Mem '$xm' MiB, last target $last MiB"; fi

lines=$(_console_since_mark ballast | grep -c 'balloon: target [0-9]* KiB -> current')
retries=$(xs_read ballast data/balloon/retries)
gaveup=$(_console_since_mark ballast | grep -c 'balloon: giving up')
[ "$gaveup" -eq 0 ] && pass no-give-up "no reconciliation gave up (retries $retries)" || fail no-give-up "$gaveup reconciliations gave up"
log "$n targets in $t_storm ms; $lines reconciliations finished (the rest were overtaken); retries $retries; settled $settle ms after the storm"
ms_all=$(_console_since_mark ballast | sed -nE 's/.*balloon: target [0-9]+ KiB -> current [0-9]+ KiB in ([0-9]+) ms.*/\1/p' | tr '\n' ' ')
log "reconciliation times (ms): $ms_all"

console_mark ballast
pattern_ok pattern ballast 60

destroy_gone destroy gone 10 ballast
