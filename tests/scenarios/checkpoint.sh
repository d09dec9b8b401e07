#!/bin/sh
# xl save -c (checkpoint): the original ballast is suspended, saved and then goes on in the same
# domain (suspend cancelled); the checkpoint image is then restored as a second domain "ballast2".
# Both run side by side: pattern passes with 0 errors and xenstore figures growing in both.
# needs: ballast
# timeout: 240
. /lab/lib.sh

OURS=ballast       # domains this scenario may create: all destroyed at exit
IMAGES=            # save images to delete at exit
trap _scenario_exit EXIT
IMG=/tmp/checkpoint.img
IMAGES="$IMG /tmp/b2.cfg"
OURS="ballast ballast2"

expect_xl create create /lab/ballast.cfg $VCPUS_CFG || exit 1
ID1=$(domid ballast)
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30

console_mark ballast
if timed_xl 120 save -c ballast "$IMG"; then
    pass checkpoint "xl save -c in $XL_MS ms, image $(file_size "$IMG") bytes"
    log "xl save -c wall $XL_MS ms, image $(file_size "$IMG") bytes"
else
    fail checkpoint "xl save -c rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
if [ "$(domid ballast)" = "$ID1" ]; then pass same-domain "ballast still domid $ID1"
else fail same-domain "ballast domid '$(domid ballast)', was $ID1"; fi
running original-running ballast
expect_console asked-by-channel ballast 'control: suspend requested through the event channel' 5
expect_console cancelled ballast 'suspend: cancelled \(checkpoint\): same domain' 20
if l=$(wait_console ballast 'suspend: done: Cancelled' 20); then
    pass done-cancelled "$l"
    log "guest side (checkpoint): $(printf '%s\n' "$l" | done_figures)"
else
    fail done-cancelled "no 'suspend: done: Cancelled'; tail: $(console_text ballast | tail -n 5 | tr '\n' ' ')"
fi
console_mark ballast
pattern_ok original-pattern ballast 40
smp_ok original-vcpus-tick ballast
v=$(xs_wait_eq "$ID1" data/suspend/cancels 1 10) && pass cancels "data/suspend/cancels = $v" ||
    fail cancels "data/suspend/cancels '$v', expected 1"

# ---- restore the checkpoint as a second domain
sed -e 's/^name *=.*/name = "ballast2"/' -e "s/^vcpus *=.*/vcpus = ${VCPUS:-1}/" /lab/ballast.cfg >/tmp/b2.cfg
grep -q '^name = "ballast2"' /tmp/b2.cfg || { fail b2-cfg "cannot write /tmp/b2.cfg: $(cat /tmp/b2.cfg)"; exit 1; }
console_mark ballast
console_mark ballast2
if timed_xl 120 restore /tmp/b2.cfg "$IMG"; then
    pass restore-as-ballast2 "xl restore /tmp/b2.cfg $IMG in $XL_MS ms"
    log "xl restore (as ballast2) wall $XL_MS ms"
else
    fail restore-as-ballast2 "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1
fi
rm -f "$IMG"
ID2=$(domid ballast2)
if l=$(wait_console ballast2 'suspend: done: Resumed' 30); then
    pass ballast2-resumed "$l"
    log "guest side (ballast2 restore): $(printf '%s\n' "$l" | done_figures)"
else
    fail ballast2-resumed "no 'suspend: done: Resumed' on ballast2; tail: $(console_text ballast2 | tail -n 5 | tr '\n' ' ')"
fi
console_mark ballast2
console_mark ballast
pattern_ok ballast2-pattern ballast2 40
smp_ok ballast2-vcpus-tick ballast2
pattern_ok ballast-pattern ballast 40
running ballast-running ballast
running ballast2-running ballast2
uptime_grows ballast-uptime "$ID1"
uptime_grows ballast2-uptime "$ID2"
no_damage ballast-no-damage ballast
no_damage ballast2-no-damage ballast2

destroy_gone destroy gone 15 ballast2 ballast
