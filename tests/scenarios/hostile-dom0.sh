#!/bin/sh
# A hostile dom0: garbage, huge values, embedded NULs, deletions and rapid flips in every xenstore
# node the guest reads (memory/target, control/shutdown, control/sysrq, cpu/<n>/availability,
# data/hog/mib, data/echo, data/suspend/release, and the xenbus nodes of devices dom0 makes up:
# device/vbd/<n>/backend, backend-id and the backend's state and sectors), while an xl mem-set,
# an xl save -c and an xl save + xl restore run.
#  - slowly, one value at a time: each rejected value gets its console line; each deletion is
#    survived, and the watcher still answers the next value;
#  - floods, every 10th write a deletion: 200 writes to memory/target alone (xl mem-set and
#    xl save read memory/target themselves, so it holds a number while they run), then 200+ to
#    control/sysrq and, beside them, bursts of 25 to control/shutdown, cpu/1/availability and
#    data/hog/mib in turn, WHILE the mem-set, the checkpoint and the save + restore run (the
#    floods follow the guest to its new domid);
#  - the rate limit (kernel/src/rejects.rs): no log site prints more than 10 lines in one 5 s
#    window of the guest's clock, and once the flood is over a new bad value is logged again and
#    some line says how many were suppressed;
#  - afterwards the guest still runs: data/uptime grows, data/echo answers, the mem-set target
#    was followed and a last good one is too, the memory pattern (ballast.pattern=24) verifies
#    with 0 errors, no page leaked, no panic, and `xl shutdown -w` powers it off.
# xenstore-write unescapes its value (\xNN), which is how NULs and bytes that are not UTF-8 are
# written. The guest runs with vcpus=1, maxvcpus=2: it reads cpu/1/availability (cpu/0 is vCPU 0's,
# which it never takes offline, and only fires the watch).
# needs: ballast
# timeout: 300
. /lab/lib.sh

G=ballast
OURS=$G
IMG=/tmp/hostile-dom0.img
IMAGES=$IMG
DOMID_FILE=$LAB_TMP/domid
SEEN_IDS=""                # every domid the guest had (the flood may re-create a dead one's nodes)
FLOOD_PIDS=""
FAKE_BE=/local/domain/0/hostile   # made-up backends: outside backend/, which dom0's kernel watches
FLOOD_MAX=3000             # rounds; a flood stops there whatever happens
MIB0=128 MIB1=96 MIB2=112

_id_live() { xl list 2>/dev/null | awk -v i="$1" 'NR > 1 && $2 == i { f = 1 } END { exit !f }'; }
hostile_exit() {
    _hrc=$?
    for _p in $FLOOD_PIDS; do kill "$_p" 2>/dev/null; done
    xenstore-rm "$FAKE_BE" 2>/dev/null
    for _i in $SEEN_IDS; do _id_live "$_i" || xenstore-rm "/local/domain/$_i" 2>/dev/null; done
    (exit $_hrc)
    _scenario_exit
}
trap hostile_exit EXIT

# track_domid: the guest's domid now in D, its home in P, and in $DOMID_FILE for the floods
track_domid() {
    D=$(domid $G); P=/local/domain/$D
    echo "$D" >"$DOMID_FILE"
    SEEN_IDS="$SEEN_IDS $D"
}
# bad NAME NODE VALUE ERE: dom0 writes VALUE to NODE; a console line matching ERE follows
bad() {
    console_mark $G
    if _o=$(xenstore-write -- "$P/$2" "$3" 2>&1); then expect_console "$1" $G "$4" 10
    else fail "$1" "xenstore-write $2 failed: $_o"; fi
}
# gone NAME NODE [ERE]: dom0 deletes NODE (check NAME: xenstore-rm worked and, given ERE, the
# guest's line follows); whether the guest carried on is the next bad value's check
gone() {
    console_mark $G
    if ! _o=$(xenstore-rm "$P/$2" 2>&1); then fail "$1" "xenstore-rm $2 failed: $_o"; return 1; fi
    if [ -n "${3:-}" ]; then expect_console "$1" $G "$3" 10
    else pass "$1" "xenstore-rm $P/$2 done"; fi
}
# alive NAME: xl lists the guest running or blocked
alive() {
    if _st=$(wait_state $G rb 5); then pass "$1" "state $_st, domid $(domid $G)"
    else fail "$1" "state '$_st'; $(xl list 2>&1 | tr '\n' ' ')"; fi
}
# echo_back NAME WORD: data/echo still reaches the console
echo_back() { bad "$1" data/echo "$2" "echo: $2\$"; }
# own NODE: NODE belongs to the guest again, as libxl made it (a node dom0 re-created after a
# deletion inherits its directory's read-only permissions)
own() { xenstore-chmod "$P/$1" "n$D" 2>&1; }
# console_off: the console log's size now (to look at what came after)
console_off() { wc -c <"$(console_log $G)" | tr -d ' '; }
console_from() { tail -c +$(($1 + 1)) "$(console_log $G)" | tr -d '\r'; } # OFFSET

# flood TAG MIN BURST "NODE..." VALUE...: round after round, BURST writes to each NODE in turn,
# each the next VALUE (every 10th write a deletion instead), into the domain whose id is in
# $DOMID_FILE, until $LAB_TMP/stop-TAG exists and MIN rounds are done (FLOOD_MAX at most); what
# was done goes to $LAB_TMP/flood-TAG. (Each xenstore-write is a process of its own, and one
# xenstore-write of several values is one transaction, which fires the watch once.)
flood() {
    _ft=$1 _fm=$2 _fb=$3 _fn=$4; shift 4
    _fi=0 _fo=0 _fr=0 _f0=$(now_ms)
    while [ $_fi -lt $FLOOD_MAX ]; do
        [ $_fi -ge "$_fm" ] && [ -f "$LAB_TMP/stop-$_ft" ] && break
        for _n in $_fn; do
            _fk=0
            while [ $_fk -lt "$_fb" ]; do
                read -r _fd <"$DOMID_FILE"
                _fo=$((_fo + 1))
                if [ $((_fo % 10)) = 0 ]; then
                    xenstore-rm "/local/domain/$_fd/$_n" 2>/dev/null; _fr=$((_fr + 1))
                else
                    xenstore-write -- "/local/domain/$_fd/$_n" "$1" >/dev/null 2>&1
                    _fv=$1; shift; set -- "$@" "$_fv"
                fi
                _fk=$((_fk + 1))
            done
        done
        _fi=$((_fi + 1))
    done
    echo "$_fi rounds of $_fb over [$_fn]: $((_fo - _fr)) writes, $_fr deletions in $(( $(now_ms) - _f0 )) ms" >"$LAB_TMP/flood-$_ft"
}
flood_bg() { # TAG MIN BURST "NODE..." VALUE...: flood in the background
    rm -f "$LAB_TMP/stop-$1" "$LAB_TMP/flood-$1"
    (trap - EXIT INT TERM; flood "$@") &
    FLOOD_PIDS="$FLOOD_PIDS $!"
}
_floods_done() { for _t in "$@"; do [ -f "$LAB_TMP/flood-$_t" ] || return 1; done; }
flood_stop() { # NAME TAG...: stop the floods, wait for them (check NAME: they ended)
    _fs=$1; shift
    for _t in "$@"; do : >"$LAB_TMP/stop-$_t"; done
    if wait_until 120 _floods_done "$@"; then
        _fe=""; for _t in "$@"; do _fe="$_fe $_t: $(cat "$LAB_TMP/flood-$_t");"; done
        pass "$_fs" "$_fe"
    else
        fail "$_fs" "floods $* still running 120 s after being told to stop"
    fi
    for _p in $FLOOD_PIDS; do kill "$_p" 2>/dev/null; wait "$_p" 2>/dev/null; done
    FLOOD_PIDS=""
}

# per_window NAME ERE: over the whole console, the lines matching ERE (one log site) never exceed
# 10 in one window of the rate limit: 5 s of the guest's clock, opened by the first line after the
# previous window ended (or by a clock that went back), the first one at time 0, as
# kernel/src/rejects.rs counts them
per_window() {
    _pw=$(console_text $G | grep -E -e "$2" | sed -n 's/^\[ *\([0-9][0-9]*\.[0-9]*\)\].*/\1/p' | awk '
        { t = $1 + 0; if (t - s >= 5 || t < s) { s = t; c = 0; w++ } c++; n++; if (c > m) { m = c; mt = s } }
        END { printf "%d %d %d %s\n", n, w + 0, m + 0, mt + 0 }')
    set -- "$1" "$2" $_pw
    if [ "$3" -gt 0 ] && [ "$5" -le 10 ]; then
        pass "$1" "$3 lines of /$2/ on the console, at most $5 in one 5 s window (guest time $6 s)"
    else
        fail "$1" "$3 lines of /$2/ on the console, $5 in the 5 s window from guest time $6 s (limit 10)"
    fi
}
# suppressed NAME OFFSET ERE: since OFFSET a line of the site ERE says how many it left out
suppressed() {
    _sl=$(console_from "$2" | grep -E -m1 -e "($3).* \([0-9]+ more like it suppressed\)")
    if [ -n "$_sl" ]; then pass "$1" "$_sl"
    else fail "$1" "no line matching /$3/ says '(N more like it suppressed)' since the flood; last of them: $(console_from "$2" | grep -E -e "$3" | tail -n 2 | _oneline)"; fi
}
# lines_since OFFSET ERE: how many console lines since OFFSET match ERE
lines_since() { console_from "$1" | grep -c -E -e "$2"; }
# quiet ERE: wait (up to 30 s) until 6 s pass without a new line matching ERE
quiet() {
    _q=0
    while [ $_q -lt 5 ]; do
        _q1=$(console_text $G | grep -c -E -e "$1"); sleep 6
        [ "$(console_text $G | grep -c -E -e "$1")" = "$_q1" ] && return 0
        _q=$((_q + 1))
    done
    return 1
}

# the log sites (kernel/src/rejects.rs limits each on its own)
SITE_TARGET='balloon: (ignoring memory/target|reading memory/target failed)'
SITE_SHUTDOWN='control: (ignoring unknown shutdown request|reading control/shutdown failed)'
SITE_SYSRQ='control: (sysrq key|sysrq value|reading control/sysrq failed)'
SITE_CPU='vcpus: cpu/1/availability = '
SITE_HOG='hog: ignoring data/hog/mib'
x4000=$(printf '%4000s' '' | tr ' ' x)
y4000=$(printf '%4000s' '' | tr ' ' y)
z4000=$(printf '%4000s' '' | tr ' ' z)

# ---- a guest that reads cpu/1/availability and keeps a 24 MiB pattern
expect_xl create create /lab/ballast.cfg "memory=$MIB0" "maxmem=$MIB0" 'vcpus=1' 'maxvcpus=2' \
    'extra="ballast.pattern=24"' || exit 1
track_domid
expect_console ready $G 'control: watching control/shutdown' 40 || exit 1
expect_console two-vcpus $G 'smp: the domain has 2 vCPUs' 5
expect_console balloon-up $G 'balloon: target [0-9]+ KiB -> current [0-9]+ KiB' 30
pattern_ok pattern-before $G 30
TGT=$(xs_read $D memory/target)
is_uint "$TGT" || { fail target-read "memory/target of domid $D reads '$TGT'"; exit 1; }
up0=$(xs_wait_uint $D data/uptime 10)

# ---- slowly: one value at a time (at most 10 a site, so that the rate limit stays out of it)
stay="staying at target $TGT KiB"
bad mt-word memory/target junk "balloon: ignoring memory/target \"junk\" \\(NotANumber\\); $stay"
bad mt-minus-one memory/target -1 "balloon: ignoring memory/target \"-1\" \\(Negative\\); $stay"
bad mt-overflow memory/target 99999999999999999999999 \
    "balloon: ignoring memory/target \"99999999999999999999999\" \\(Overflow\\); $stay"
bad mt-implausible memory/target 2199023255553 \
    "balloon: ignoring memory/target \"2199023255553\" \\(Implausible\\(2199023255553\\)\\); $stay"
bad mt-4000-bytes memory/target "$x4000" "balloon: ignoring memory/target \"x{40}\" \\(NotANumber\\); $stay"
bad mt-nul memory/target '12\x0034' "balloon: ignoring memory/target \"12\\\\034\" \\(NotANumber\\); $stay"
bad mt-not-utf8 memory/target '\xff\xfe' 'balloon: reading memory/target failed: .*UTF-8.*; ignored'
gone mt-rm memory/target 'balloon: reading memory/target failed: .*ENOENT.*; ignored'
bad mt-after-rm memory/target still-junk "balloon: ignoring memory/target \"still-junk\" \\(NotANumber\\); $stay"
xenstore-write "$P/memory/target" "$TGT"
sleep 1
cur=$(xs_read $D data/balloon/current_kb); tk=$(xs_read $D data/balloon/target_kb)
if [ "$cur" = "$TGT" ] && [ "$tk" = "$TGT" ]; then pass mt-stayed "data/balloon current_kb=$cur target_kb=$tk"
else fail mt-stayed "data/balloon current_kb='$cur' target_kb='$tk', expected $TGT"; fi

bad sd-word control/shutdown reboot-now 'control: ignoring unknown shutdown request "reboot-now"$'
bad sd-nul-poweroff control/shutdown '\x00poweroff' 'control: ignoring unknown shutdown request "\\0poweroff"$'
bad sd-poweroff-nul control/shutdown 'poweroff\x00' 'control: ignoring unknown shutdown request "poweroff\\0"$'
bad sd-4000-bytes control/shutdown "$y4000" 'control: ignoring unknown shutdown request "y{64}"$'
bad sd-minus-one control/shutdown -1 'control: ignoring unknown shutdown request "-1"$'
bad sd-not-utf8 control/shutdown '\xff' 'control: reading control/shutdown failed: .*UTF-8.*; ignored'
gone sd-rm control/shutdown
bad sd-after-rm control/shutdown after-rm 'control: ignoring unknown shutdown request "after-rm"$'
xenstore-write "$P/control/shutdown" "" && own control/shutdown
alive sd-still-running

bad sysrq-word control/sysrq zz 'control: sysrq value "zz" is not a single key; ignored'
bad sysrq-q control/sysrq q "control: sysrq key 'q' has no action; ignored"
bad sysrq-nuls control/sysrq '\x00\x00' 'control: sysrq value "\\0\\0" is not a single key; ignored'
bad sysrq-4000-bytes control/sysrq "$y4000" 'control: sysrq value "y{32}" is not a single key; ignored'
bad sysrq-not-utf8 control/sysrq '\xff' 'control: reading control/sysrq failed: .*UTF-8.*; ignored'
gone sysrq-rm control/sysrq
bad sysrq-after-rm control/sysrq zz-after-rm 'control: sysrq value "zz-after-rm" is not a single key; ignored'
xenstore-write "$P/control/sysrq" "" && own control/sysrq

bad cpu-word cpu/1/availability maybe 'vcpus: cpu/1/availability = "maybe" is neither online nor offline; ignored'
bad cpu-trailing-space cpu/1/availability 'online ' 'vcpus: cpu/1/availability = "online " is neither'
bad cpu-nul cpu/1/availability '\x00online' 'vcpus: cpu/1/availability = "\\0online" is neither'
bad cpu-4000-bytes cpu/1/availability "$x4000" 'vcpus: cpu/1/availability = "x{40}" is neither'
bad cpu-minus-one cpu/1/availability -1 'vcpus: cpu/1/availability = "-1" is neither'
gone cpu1-rm cpu/1/availability
gone cpu0-rm cpu/0/availability
bad cpu-after-rm cpu/1/availability sideways 'vcpus: cpu/1/availability = "sideways" is neither'
xenstore-write "$P/cpu/1/availability" offline "$P/cpu/0/availability" online
v=$(xs_wait_eq $D data/vcpu/online 1 5); o=$(vcpus_online_count $G)
if [ "$v" = 1 ] && [ "$o" = 1 ]; then pass cpu-unchanged "data/vcpu/online = 1, xl vcpu-list: 1 online"
else fail cpu-unchanged "data/vcpu/online '$v', xl vcpu-list $o online, expected 1"; fi

hog="hog: ignoring data/hog/mib"
bad hog-word data/hog/mib lots "$hog \"lots\": not a number of MiB"
bad hog-minus-one data/hog/mib -1 "$hog \"-1\": not a number"
bad hog-overflow data/hog/mib 99999999999999999999999 "$hog \"99999999999999999999999\": not a number"
bad hog-too-big data/hog/mib 1048577 "$hog \"1048577\": not a number of MiB up to 1048576"
bad hog-4000-bytes data/hog/mib "$z4000" "$hog \"z{40}\": not a number"
bad hog-nul data/hog/mib '\x00' "$hog \"\\\\0\": not a number"
gone hog-rm data/hog/mib
bad hog-after-rm data/hog/mib more "$hog \"more\": not a number"
xenstore-rm "$P/data/hog/mib"
v=$(xs_read $D data/hog/held_mib)
if [ "$v" = 0 ]; then pass hog-idle "data/hog/held_mib = 0"; else fail hog-idle "data/hog/held_mib '$v'"; fi

bad echo-4000-bytes data/echo "$z4000" 'echo: z{200}$'
gone echo-rm data/echo
echo_back echo-after-rm back-after-rm

_forgotten() { [ "$(_console_since_mark $G | grep -c 'gone from device/vbd while failed; forgotten')" -ge "$1" ]; } # N
# ---- devices dom0 makes up (device/vbd/<n>: blkfront reads backend, backend-id, then the
# backend's state, and once it says Connected, sectors)
FE=$P/device/vbd BE=$FAKE_BE/$D
console_mark $G
xenstore-write "$FE/hostile/backend" x
expect_console xb-not-a-number $G 'xenbus: device/vbd/"hostile" is not a device number; ignored' 10
# the guest owns device/vbd from now on (what dom0 makes there is its own, as libxl does it)
xenstore-chmod "$FE" "n$D" r0
xenstore-rm "$FE/hostile"
xenstore-write "$BE/779/state" garbage "$BE/780/state" 2
xenstore-chmod -r "$FAKE_BE" n0 "r$D"
console_mark $G
xenstore-write "$FE/777/backend" not-a-path "$FE/777/backend-id" 0 \
    "$FE/778/backend" "$BE/778" "$FE/778/backend-id" 99999999999 \
    "$FE/779/backend" "$BE/779" "$FE/779/backend-id" 0 \
    "$FE/780/backend" "$BE/780" "$FE/780/backend-id" 0
expect_console xb-backend-path $G 'blkfront 777: device/vbd/777/backend = "not-a-path" is malformed: disk failed' 10
expect_console xb-backend-id $G 'blkfront 778: device/vbd/778/backend-id = "99999999999" is malformed: disk failed' 10
expect_console xb-backend-state $G 'blkfront 779: backend state: not a number: disk failed' 10
# 780's backend says InitWait: the guest grants a ring and publishes it, then waits
if v=$(xs_wait_eq $D device/vbd/780/state 3 10); then
    pass xb-published "device/vbd/780: state $v, ring-ref $(xs_read $D device/vbd/780/ring-ref), event-channel $(xs_read $D device/vbd/780/event-channel)"
else
    fail xb-published "device/vbd/780/state reads '$v', expected 3 (Initialised)"
fi
xenstore-write "$BE/780/sectors" lots "$BE/780/state" 4
expect_console xb-sectors $G "blkfront 780: $BE/780/sectors = \"lots\" is malformed: disk failed" 10
console_mark $G
xenstore-rm "$FE"
if wait_until 10 _forgotten 4; then
    pass xb-forgotten "$(_console_since_mark $G | grep 'forgotten' | _oneline)"
else
    fail xb-forgotten "not every made-up device was forgotten: $(_console_since_mark $G | tail -n 4 | _oneline)"
fi
xenstore-rm "$FAKE_BE"
alive slow-alive
echo_back slow-echo after-the-slow-part

# ---- flood memory/target alone: 200 rounds, every 10th a deletion, then the good value again
B_OFF=$(console_off)
: >"$LAB_TMP/stop-B"
flood B 200 1 memory/target junk -1 99999999999999999999999 "$x4000" '\x00\x00' q '' 2199023255553 '\xff' flip-flop
pass flood-target "$(cat "$LAB_TMP/flood-B")"
xenstore-write "$P/memory/target" "$TGT"
log "memory/target flood: $(lines_since "$B_OFF" "$SITE_TARGET") lines from that site meanwhile"
alive flood-target-alive
echo_back flood-target-echo after-the-target-flood
cur=$(xs_read $D data/balloon/current_kb); tk=$(xs_read $D data/balloon/target_kb)
if [ "$cur" = "$TGT" ] && [ "$tk" = "$TGT" ]; then pass flood-target-stayed "data/balloon current_kb=$cur target_kb=$tk"
else fail flood-target-stayed "data/balloon current_kb='$cur' target_kb='$tk', expected $TGT"; fi

# ---- flood control/sysrq and, in turn, control/shutdown, cpu/1/availability, data/hog/mib while
# a mem-set, a checkpoint and a save + restore run
C_OFF=$(console_off)
flood_bg S 200 1 control/sysrq junk -1 99999999999999999999999 "$y4000" '\x00\x00' q '' 2199023255553 '\xff' zz
flood_bg M 3 25 "control/shutdown cpu/1/availability data/hog/mib" \
    junk -1 99999999999999999999999 "$x4000" '\x00\x00' q '' 2199023255553 '\xff' off-line
sleep 2
console_mark $G
if xl_bounded 60 mem-set $G ${MIB1}m; then
    expect_mem flood-mem-set $G $MIB1 60
else
    fail flood-mem-set "xl mem-set ${MIB1}m during the flood: rc=$_xrc $XL_OUT"
fi
expect_console flood-mem-set-guest $G "balloon: target $((MIB1 * 1024)) KiB -> current $((MIB1 * 1024)) KiB" 30
TGT=$((MIB1 * 1024))

xenstore-write "$P/data/suspend/release" maybe
console_mark $G
if timed_xl 120 save -c $G "$IMG"; then pass flood-checkpoint "xl save -c in $XL_MS ms"
else fail flood-checkpoint "xl save -c rc=$_xrc after $XL_MS ms: $XL_OUT"; fi
rm -f "$IMG"
expect_console flood-checkpoint-done $G 'suspend: done: Cancelled, .*suspends=1 ' 30
expect_console rel-checkpoint $G 'suspend: data/suspend/release = "maybe" is neither 0 nor 1; ignored' 5

xenstore-write "$P/data/suspend/release" "$x4000"
console_mark $G
ID1=$D
if timed_xl 120 save $G "$IMG"; then pass flood-save "xl save in $XL_MS ms, image $(file_size "$IMG") bytes"
else fail flood-save "xl save rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
expect_gone flood-saved-gone 10 $G
expect_console rel-save $G 'suspend: data/suspend/release = "x{40}" is neither 0 nor 1; ignored' 5
if timed_xl 120 restore "$IMG"; then pass flood-restore "xl restore in $XL_MS ms"
else fail flood-restore "xl restore rc=$_xrc after $XL_MS ms: $XL_OUT"; exit 1; fi
rm -f "$IMG"
track_domid
if is_uint "$D" && [ "$D" != "$ID1" ]; then pass new-domid "restored as domid $D (was $ID1)"
else fail new-domid "domid after restore '$D' (was $ID1)"; fi
expect_console flood-resumed $G 'suspend: done: Resumed, .*suspends=2 ' 30
# the flood goes on in the new domain for a while
sleep 3
flood_stop flood-stopped S M
log "during the floods: sysrq $(lines_since "$C_OFF" "$SITE_SYSRQ"), shutdown $(lines_since "$C_OFF" "$SITE_SHUTDOWN"), cpu/1 $(lines_since "$C_OFF" "$SITE_CPU"), hog $(lines_since "$C_OFF" "$SITE_HOG") lines"
# what libxl made, back again
xenstore-write "$P/control/shutdown" "" "$P/control/sysrq" "" "$P/cpu/1/availability" offline
own control/shutdown; own control/sysrq
xenstore-rm "$P/data/hog/mib" 2>/dev/null
for i in $SEEN_IDS; do [ "$i" = "$D" ] || xenstore-rm "/local/domain/$i" 2>/dev/null; done

# ---- the guest came through
alive after-alive
uptime_grows after-uptime "$D"
echo_back after-echo after-the-floods
v=$(xs_wait_eq $D data/suspend/count 2 10) && pass suspend-count "data/suspend/count = $v" ||
    fail suspend-count "data/suspend/count '$v', expected 2 (a checkpoint and a save)"
xl_kb_matches after-kb $G
v=$(xs_read $D data/balloon/target_kb)
[ "$v" = "$TGT" ] && pass after-target "data/balloon/target_kb = $v (the mem-set during the flood)" ||
    fail after-target "data/balloon/target_kb '$v', expected $TGT"
v=$(xs_wait_eq $D data/vcpu/online 1 5)
[ "$v" = 1 ] && pass after-vcpus "data/vcpu/online = 1" || fail after-vcpus "data/vcpu/online '$v', expected 1"
console_mark $G
pattern_ok after-pattern $G 40

# ---- the rate limit: once every flooded site has been quiet for 6 s, a bad value is logged
# again, and some line since its flood says how many were left out
quiet "$SITE_TARGET|$SITE_SHUTDOWN|$SITE_SYSRQ|$SITE_CPU|$SITE_HOG" || log "the flooded sites still log 30 s after the floods"
bad rl-target-again memory/target after-the-flood 'balloon: ignoring memory/target "after-the-flood"'
bad rl-sysrq-again control/sysrq after-the-flood 'control: sysrq value "after-the-flood" is not a single key'
bad rl-shutdown-again control/shutdown after-the-flood 'control: ignoring unknown shutdown request "after-the-flood"'
bad rl-cpu-again cpu/1/availability after-the-flood 'vcpus: cpu/1/availability = "after-the-flood" is neither'
bad rl-hog-again data/hog/mib after-the-flood 'hog: ignoring data/hog/mib "after-the-flood"'
suppressed rl-target-suppressed "$B_OFF" "$SITE_TARGET"
suppressed rl-sysrq-suppressed "$C_OFF" "$SITE_SYSRQ"
suppressed rl-shutdown-suppressed "$C_OFF" "$SITE_SHUTDOWN"
suppressed rl-cpu-suppressed "$C_OFF" "$SITE_CPU"
suppressed rl-hog-suppressed "$C_OFF" "$SITE_HOG"
per_window rl-target-window "$SITE_TARGET"
per_window rl-sysrq-window "$SITE_SYSRQ"
per_window rl-shutdown-window "$SITE_SHUTDOWN"
per_window rl-cpu-window "$SITE_CPU"
per_window rl-hog-window "$SITE_HOG"
xenstore-write "$P/memory/target" "$TGT" "$P/control/shutdown" "" "$P/control/sysrq" "" "$P/cpu/1/availability" offline
xenstore-rm "$P/data/hog/mib" 2>/dev/null

# ---- a good target is still followed, nothing was damaged, and the guest still powers off
console_mark $G
balloon_to final-mem-set $G $MIB2 60
expect_console final-mem-set-guest $G "balloon: target $((MIB2 * 1024)) KiB -> current $((MIB2 * 1024)) KiB" 30
no_damage no-damage $G
leaks=$(console_text $G | grep -c 'page leaked')
if [ "$leaks" = 0 ]; then pass no-page-leaked "no shared page leaked (made-up backends never mapped their rings)"
else fail no-page-leaked "$leaks: $(console_text $G | grep -m 3 'page leaked' | _oneline)"; fi
console_mark $G
t0=$(now_ms)
if xl_bounded 60 shutdown -w $G && wait_gone $G 5; then
    pass final-shutdown "$G gone $(( $(now_ms) - t0 )) ms after xl shutdown -w"
else
    fail final-shutdown "xl shutdown -w rc=$_xrc: $XL_OUT; $(xl list 2>&1 | tr '\n' ' ')"
fi
expect_console final-poweroff $G 'control: poweroff requested' 5
