#!/bin/sh
# Benchmark: ballast and the reference Linux PV guest measured side by side in one lab boot.
# Run through `make bench [N=3]`; tests/bench/report.py turns the output into a table.
#
# Every figure is one machine-readable line (run.py keeps it in build/lab/bench.log):
#   @@LAB bench: {"guest":"ballast","metric":"save_256_ms","value":1234,"run":1}
# "value" is null when the step failed or could not be measured (a "note" says why). No
# figure is judged here: the only checks are that each guest's runs completed.
#
# The number of runs comes from dom0's kernel command line (bench_runs=N, set by the Makefile).
# Per run and guest (the two guests alternate which goes first): boot, console round trip,
# save + restore at 256 MiB, checkpoint, balloon to 64 MiB and back timed by `xl list`, then
# again timed by /lab/memtime (Xen's page count polled every ms), save + restore at 64 MiB,
# balloon back to 256 MiB, then the descending mem-set ladder. After the last run, once per guest: the smallest
# memory= that boots and answers a checkpoint. After each guest's run: the small-save-image
# figures (see si_ballast / si_linux below), then the live-migration figures (mig_ballast /
# mig_linux), then for ballast the hypervisor's limit and the toolstack's floor (limits_ballast).
# needs: linux-guest ballast
# timeout: 3600
. /lab/lib.sh
. /lab/scenarios/bench-daemon.sh
. /lab/scenarios/bench-pv.sh

RUNS=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^bench_runs=\([0-9][0-9]*\)$/\1/p' | tail -n 1)
# bench_only=mig|chan|limit|smp|daemon|pv (make bench ONLY=mig): only the live-migration, the
# suspend-channel, the limit (with a floor of 24 MiB), the 1- and 4-vCPU, the ballastd
# (tests/bench/bench-daemon.sh) or the PV disk and network (tests/bench/bench-pv.sh) figures, for
# quick iterations
ONLY=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^bench_only=\([a-z]*\)$/\1/p' | tail -n 1)
case $RUNS in '' | 0) RUNS=3 ;; esac
LADDER="128 96 80 64 48 32 24 16 12 8"   # mem-set targets (MiB), descending
BOOT_SIZES="128 96 80 64 48 32 24 16 12 8 6 4"   # memory=maxmem= sizes (MiB), descending

# Save images live on their own tmpfs: dom0's rootfs (half of dom0's RAM, already holding the
# initramfs) cannot take a 256 MiB image. One image at a time, deleted right after use.
IMGDIR=/tmp/bench-img
mkdir -p "$IMGDIR"
mount -t tmpfs -o size=90% tmpfs "$IMGDIR" 2>/dev/null || log "tmpfs mount failed; using /tmp"
IMG=$IMGDIR/bench.img
B2CFG=/tmp/bench-cfg

cleanup_bench() {
    _rc=$?
    daemon_cleanup
    pv_cleanup
    for _d in ballast linux-guest; do xl domid "$_d" >/dev/null 2>&1 && xl destroy "$_d" >/dev/null 2>&1; done
    rm -f "$IMG"
    umount "$IMGDIR" 2>/dev/null
    (exit $_rc)
    _lab_exit
}
trap cleanup_bench EXIT

# ---------------------------------------------------------------- helpers
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; return 0; }
is_num() { printf '%s\n' "$1" | grep -Eq '^-?[0-9]+(\.[0-9]+)?$'; }
RUN=0
emit() { # GUEST METRIC VALUE [NOTE]
    _v=$3
    is_num "$_v" || _v=null
    if [ -n "$4" ]; then
        log "{\"guest\":\"$1\",\"metric\":\"$2\",\"value\":$_v,\"run\":$RUN,\"note\":\"$(printf '%s' "$4" | tr -d '"\\' | cut -c1-160)\"}"
    else
        log "{\"guest\":\"$1\",\"metric\":\"$2\",\"value\":$_v,\"run\":$RUN}"
    fi
}
to_mib() { awk -v b="$1" 'BEGIN { printf "%.1f\n", b / 1048576 }'; }
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
cfg_of() { echo "/lab/$1.cfg"; }
mem_of() { xl list "$1" 2>/dev/null | awk -v d="$1" '$1 == d { print $3 }'; }
con_size() { size_of "$(console_log "$1")"; }
ready_re() { if [ "$1" = ballast ]; then echo 'control: watching control/shutdown'; else echo 'linux-guest ready'; fi; }

# bxl SECS ARGS...: `xl ARGS` bounded, wall time in XL_MS, output in XL_OUT (one line)
bxl() {
    _s=$1; shift
    _t=$(now_ms)
    XL_OUT=$(timeout "$_s" xl "$@" 2>&1)
    _xrc=$?
    XL_MS=$(( $(now_ms) - _t ))
    XL_OUT=$(printf '%s' "$XL_OUT" | grep -v '^Parsing config' | _oneline)
    [ $_xrc -ne 0 ] && echo "[xl] xl $* -> exit $_xrc after $XL_MS ms: $XL_OUT"
    return $_xrc
}

# answer GUEST SECS: time (ANSWER_MS) from sending a probe on the guest's console until the guest
# answers. ballast logs what its console reader got; Linux's shell evaluates $((40+2)), which the
# tty's own echo of the input cannot produce. The console pty is looked up (xl domid, xenstore)
# before the clock starts; the probe is resent every 2 s.
PROBE=0
answer() {
    PROBE=$((PROBE + 1))
    _aend=$(( $(now_ms) + $2 * 1000 )); _ak=0
    _atag="r${RUN}p${PROBE}"
    if [ "$1" = ballast ]; then _are="console: read [0-9]+ bytes: \"bench-$_atag-"
    else _are="bench-42-$_atag-"; fi
    while :; do
        _aid=$(domid "$1")
        _atty=$(xenstore-read "/local/domain/$_aid/console/tty" 2>/dev/null)
        [ -n "$_aid" ] && [ -c "$_atty" ] && break
        [ "$(now_ms)" -ge "$_aend" ] && { ANSWER_MS=; return 1; }
        sleep 0.2
    done
    console_mark "$1"
    _at=$(now_ms); _anext=$_at
    while :; do
        _an=$(now_ms)
        if [ "$_an" -ge "$_anext" ]; then
            _ak=$((_ak + 1))
            if [ "$1" = ballast ]; then printf 'bench-%s-%d\r' "$_atag" "$_ak" >"$_atty"
            else printf 'echo bench-$((40+2))-%s-%d\r' "$_atag" "$_ak" >"$_atty"; fi
            _anext=$((_an + 2000))
        fi
        if _console_since_mark "$1" | grep -Eq -e "$_are"; then
            ANSWER_MS=$(( $(now_ms) - _at )); return 0
        fi
        [ "$(now_ms)" -ge "$_aend" ] && { ANSWER_MS=; return 1; }
        sleep 0.1
    done
}

# converge GUEST TARGET_MIB FROM_MIB T0 SECS: poll `xl list` Mem until it is within 1 MiB of
# the target, or has not moved for 4 s (stalled), or SECS pass. Sets CONV_MIB (last Mem seen)
# and CONV_MS (from T0 to the midpoint of the poll that first saw the final value).
converge() {
    _g=$1 _tg=$2 _last=$3 _t0=$4
    _lastch=$_t0; CONV_MS=; CONV_MIB=$_last
    while :; do
        _a=$(now_ms); _m=$(mem_of "$_g"); _b=$(now_ms)
        _mid=$(( (_a + _b) / 2 ))
        is_uint "$_m" || { CONV_MIB=; return 1; }
        if [ "$_m" != "$_last" ]; then _last=$_m; _lastch=$_mid; fi
        CONV_MIB=$_m
        _d=$((_m - _tg)); [ $_d -lt 0 ] && _d=$((-_d))
        if [ $_d -le 1 ]; then CONV_MS=$((_mid - _t0)); return 0; fi
        if [ $((_b - _lastch)) -ge 4000 ] || [ $((_b - _t0)) -ge $(($5 * 1000)) ]; then
            CONV_MS=$((_lastch - _t0)); return 1
        fi
        sleep 0.2
    done
}

# memset GUEST FROM TARGET: mem-set and wait; sets CONV_*, MIBPS (MiB moved per second)
memset() {
    _t0=$(now_ms)
    MIBPS=
    if ! bxl 30 mem-set "$1" "${3}m"; then CONV_MIB=; CONV_MS=; return 1; fi
    converge "$1" "$3" "$2" "$_t0" 90
    _r=$?
    if is_uint "$CONV_MIB" && is_uint "$CONV_MS" && [ "$CONV_MS" -gt 0 ] && [ "$CONV_MIB" != "$2" ]; then
        MIBPS=$(awk -v a="$2" -v b="$CONV_MIB" -v ms="$CONV_MS" 'BEGIN { d = a - b; if (d < 0) d = -d; printf "%.1f\n", d * 1000 / ms }')
    fi
    return $_r
}

# precise GUEST TARGET_MIB DIR: /lab/memtime sets the target as `xl mem-set` does and polls Xen's
# page count every millisecond through libxenctrl until it is within 1 MiB of the target (or stops
# moving for 4 s: then timed to where it stalled, as `converge` does; the note says which);
# emits balloon_DIR_precise_mibps and balloon_DIR_precise_ms.
precise() {
    _pl=$(timeout 120 /lab/memtime "$(domid "$1")" "$2" 2>&1 | tail -n 1)
    _pms=$(printf '%s\n' "$_pl" | sed -n 's/.* ms=\([0-9.]*\) .*state=\(converged\|stalled\).*/\1/p')
    _prate=$(printf '%s\n' "$_pl" | sed -n 's/.* state=\(converged\|stalled\) mibps=\([0-9.]*\).*/\2/p')
    emit "$1" "balloon_${3}_precise_mibps" "$_prate" "$_pl"
    emit "$1" "balloon_${3}_precise_ms" "$_pms" "$_pl"
}

# boot GUEST [xl create overrides...]: create, wait for the first console byte and for ready.
# Sets BOOT_FIRST_MS / BOOT_READY_MS (from the start of xl create). Gives up early when the
# domain crashes, disappears or panics.
boot() {
    _g=$1; shift
    _bound=40; [ "$_g" = linux-guest ] && _bound=90
    console_mark "$_g"
    _c0=$(cat "$LAB_TMP/marks/$_g")
    BOOT_FIRST_MS=; BOOT_READY_MS=
    _t0=$(now_ms)
    bxl 120 create "$(cfg_of "$_g")" "$@" || return 1
    _f=$(console_log "$_g"); _end=$((_t0 + _bound * 1000)); _n=0
    while :; do
        _now=$(now_ms)
        if [ -z "$BOOT_FIRST_MS" ] && [ "$(size_of "$_f")" -gt "$_c0" ]; then BOOT_FIRST_MS=$((_now - _t0)); fi
        if [ -n "$BOOT_FIRST_MS" ] && _console_since_mark "$_g" | grep -Eq -e "$(ready_re "$_g")"; then
            BOOT_READY_MS=$(( $(now_ms) - _t0 )); return 0
        fi
        [ "$_now" -ge "$_end" ] && return 1
        _n=$((_n + 1))
        if [ $((_n % 20)) -eq 0 ]; then   # every ~2 s: is it still alive?
            case $(domstate "$_g") in *c* | gone) return 1 ;; esac
            _console_since_mark "$_g" | grep -Eq 'Kernel panic|panicked' && return 1
        fi
        sleep 0.1
    done
}

# (a new domain of the same name logs to GUEST's own console log again, not a migrated one's)
destroy() { xl destroy "$1" >/dev/null 2>&1; wait_gone "$1" 20 || log "$1 still listed after destroy"; rm -f "$LAB_TMP/alias-$1"; }

# guest_suspend GUEST: guest-side suspend+resume, suspend and resume times (ms, one line
# "TOTAL SUSPEND RESUME") of the last save/restore, from the console text since the mark set
# before the save. ballast: its own "suspend: done" line (before and after the hypercall). Linux
# (printk time, which like ballast's clock does not count the time the domain was saved): total
# from "Freezing user space processes" to "Restarting tasks ... done."; suspend up to the last
# line before the first one printed after the hypercall ("xen:grant_table: Grant tables"), resume
# from that line on. Linux's device suspend after its last line counts in neither half.
guest_suspend() {
    if [ "$1" = ballast ]; then
        _console_since_mark ballast |
            sed -n 's/.*suspend: done: Resumed, total \([0-9]*\) us, .*before hypercall \([0-9]*\) us, after \([0-9]*\) us.*/\1 \2 \3/p' |
            tail -n 1 | awk 'NF { printf "%.1f %.1f %.1f\n", $1 / 1000, $2 / 1000, $3 / 1000 }'
    else
        _console_since_mark linux-guest | awk '
            function ts() { if (match($0, /\[ *[0-9]+\.[0-9]+\]/)) return substr($0, RSTART + 1, RLENGTH - 2) + 0; return -1 }
            /Freezing user space processes/ && !/completed/ { s = ts(); f = 1; last = s; next }
            f && !g && /Grant tables/ { g = ts(); next }
            f && !g { t = ts(); if (t >= 0) last = t }
            /Restarting tasks/ && f && g { e = ts(); printf "%.1f %.1f %.1f\n", (e - s) * 1000, (last - s) * 1000, (e - g) * 1000; exit }'
    fi
}

# save_restore GUEST TAG: xl save, image size, xl restore, answering; emits *_TAG metrics.
save_restore() {
    _g=$1 _tag=$2
    console_mark "$_g"
    cp "$LAB_TMP/marks/$_g" "$LAB_TMP/marks/$_g.save"
    if bxl 90 save "$_g" "$IMG"; then
        emit "$_g" "save_${_tag}_ms" "$XL_MS"
        emit "$_g" "image_${_tag}_mib" "$(to_mib "$(size_of "$IMG")")"
    else
        emit "$_g" "save_${_tag}_ms" null "xl save exit $_xrc after $XL_MS ms: $XL_OUT"
        emit "$_g" "image_${_tag}_mib" null "save failed"
        emit "$_g" "restore_${_tag}_ms" null "save failed"
        emit "$_g" "restore_${_tag}_answer_ms" null "save failed"
        rm -f "$IMG"
        return 1
    fi
    wait_gone "$_g" 10 || log "$_g still listed after xl save"
    if bxl 90 restore "$IMG"; then
        rm -f "$IMG"
        emit "$_g" "restore_${_tag}_ms" "$XL_MS"
    else
        rm -f "$IMG"
        emit "$_g" "restore_${_tag}_ms" null "xl restore exit $_xrc: $(printf '%s' "$XL_OUT" | grep -o 'xc: error: [^:]*' | head -n 1)"
        emit "$_g" "restore_${_tag}_answer_ms" null "restore failed"
        return 1
    fi
    if answer "$_g" 30; then emit "$_g" "restore_${_tag}_answer_ms" "$ANSWER_MS"
    else emit "$_g" "restore_${_tag}_answer_ms" null "no console answer within 30 s"; return 1; fi
    # the guest-side figures: at 256 MiB under their plain names, at N vCPUs (tag vN) suffixed
    case $_tag in
        256) _sfx= ;;
        v*) _sfx=_$_tag ;;
        *) return 0 ;;
    esac
    cp "$LAB_TMP/marks/$_g.save" "$LAB_TMP/marks/$_g"
    [ "$_g" = ballast ] && wait_console ballast 'suspend: done: Resumed' 10 >/dev/null
    # (not _v: emit's own variable)
    _gs=$(guest_suspend "$_g")
    _why=$([ -z "$_gs" ] && echo no suspend/resume lines on the console)
    emit "$_g" "guest_suspend_resume${_sfx}_ms" "$(echo "$_gs" | cut -d' ' -f1)" "$_why"
    emit "$_g" "guest_suspend${_sfx}_ms" "$(echo "$_gs" | cut -d' ' -f2)" "$_why"
    emit "$_g" "guest_resume${_sfx}_ms" "$(echo "$_gs" | cut -d' ' -f3)" "$_why"
    return 0
}

# checkpoint GUEST: xl save -c bounded; wall time in XL_MS; then the console must answer.
checkpoint() {
    bxl "${2:-60}" save -c "$1" "$IMG"; _r=$?
    rm -f "$IMG"
    return $_r
}

# has_balloon GUEST: Linux always has one; ballast only if it publishes data/balloon (checked
# right after boot, before any save).
has_balloon() {
    [ "$1" = linux-guest ] && return 0
    _id=$(domid ballast)
    wait_until 5 xenstore-read "/local/domain/$_id/data/balloon/current_kb" >/dev/null 2>&1
}

# ---------------------------------------------------------------- one run of one guest
run_guest() {
    g=$1
    log "run $RUN: $g"
    if ! boot "$g"; then
        emit "$g" boot_first_line_ms "$BOOT_FIRST_MS"
        emit "$g" boot_ready_ms null "not ready: $(_console_since_mark "$g" | tail -n 3 | _oneline)"
        destroy "$g"; return 1
    fi
    emit "$g" boot_first_line_ms "$BOOT_FIRST_MS"
    emit "$g" boot_ready_ms "$BOOT_READY_MS"
    HAS_BALLOON=0; has_balloon "$g" && HAS_BALLOON=1
    sleep 3   # idle
    if answer "$g" 20; then emit "$g" console_rtt_ms "$ANSWER_MS"; else emit "$g" console_rtt_ms null "no answer"; fi

    if ! save_restore "$g" 256; then destroy "$g"; return 1; fi

    sleep 1
    if checkpoint "$g" 90; then
        emit "$g" ckpt_ms "$XL_MS"
        if answer "$g" 30; then emit "$g" ckpt_answer_ms "$ANSWER_MS"
        else emit "$g" ckpt_answer_ms null "no answer within 30 s"; fi
    else
        emit "$g" ckpt_ms null "xl save -c exit $_xrc: $XL_OUT"
        emit "$g" ckpt_answer_ms null "checkpoint failed"
    fi

    if [ $HAS_BALLOON = 0 ]; then
        for m in balloon_down_mibps balloon_64_reached_mib balloon_up_mibps save_64_ms image_64_mib \
                 restore_64_ms restore_64_answer_ms min_target_mib balloon_down_precise_mibps \
                 balloon_down_precise_ms balloon_up_precise_mibps balloon_up_precise_ms; do
            emit "$g" "$m" null "no data/balloon: balloon driver absent"
        done
        destroy "$g"; return 0
    fi
    [ "$g" = ballast ] && console_mark ballast
    memset "$g" 256 64
    emit "$g" balloon_down_mibps "$MIBPS" "reached $CONV_MIB MiB in $CONV_MS ms"
    emit "$g" balloon_64_reached_mib "$CONV_MIB"
    if [ "$g" = ballast ]; then
        _gms=$(wait_console ballast 'balloon: target 65536 KiB -> current [0-9]+ KiB in [0-9]+ ms' 5 |
               sed -n 's/.* in \([0-9]*\) ms.*/\1/p' | tail -n 1)
        emit ballast balloon_64_guest_ms "$_gms"
    fi
    _from=$(mem_of "$g")
    memset "$g" "${_from:-64}" 256
    emit "$g" balloon_up_mibps "$MIBPS" "from $_from MiB: reached $CONV_MIB MiB in $CONV_MS ms"
    sleep 1
    precise "$g" 64 down
    sleep 1
    precise "$g" 256 up
    sleep 1

    # Save + restore after `xl mem-set 64m` (not timed again). If that loses the guest (Linux: the
    # restore sizes the new domain to the 64 MiB target while Linux stalled above it), a fresh,
    # untimed boot carries on with the ladder.
    memset "$g" 256 64 || log "$g: mem-set 64m again: at $CONV_MIB MiB"
    sleep 1
    if ! save_restore "$g" 64; then
        destroy "$g"
        if ! boot "$g"; then
            emit "$g" min_target_mib null "fresh boot for the ladder failed"; destroy "$g"; return 1
        fi
        log "$g: booted afresh for the ladder"
    fi

    # The descending ladder: the last target reached (within 1 MiB) that still answers a
    # checkpoint and then the console.
    best=
    cur=$(mem_of "$g")
    for t in $LADDER; do
        if ! memset "$g" "${cur:-256}" "$t"; then
            log "$g ladder: target $t MiB not reached (at $CONV_MIB MiB)"; break
        fi
        cur=$CONV_MIB
        if ! checkpoint "$g" 30; then log "$g ladder: xl save -c at $t MiB failed: $XL_OUT"; break; fi
        if ! answer "$g" 15; then log "$g ladder: no answer after checkpoint at $t MiB"; break; fi
        best=$t
    done
    [ -n "$best" ] && emit "$g" min_target_mib "$best" ||
        emit "$g" min_target_mib null "not even the first target $(echo $LADDER | cut -d' ' -f1) MiB"
    destroy "$g"
}

# The smallest memory=maxmem= that boots and answers a checkpoint (once per guest).
min_boot() {
    g=$1 best=
    for m in $BOOT_SIZES; do
        if ! boot "$g" "memory=$m" "maxmem=$m"; then
            log "$g min-boot: memory=$m not ready: $(_console_since_mark "$g" | tail -n 2 | _oneline)"
            destroy "$g"; break
        fi
        if ! checkpoint "$g" 30; then log "$g min-boot: xl save -c at memory=$m failed: $XL_OUT"; destroy "$g"; break; fi
        if ! answer "$g" 15; then log "$g min-boot: no answer at memory=$m"; destroy "$g"; break; fi
        destroy "$g"
        best=$m
    done
    [ -n "$best" ] && emit "$g" min_boot_mib "$best" ||
        emit "$g" min_boot_mib null "did not boot and checkpoint with memory=$(echo $BOOT_SIZES | cut -d' ' -f1)"
}

# ---------------------------------------------------------------- small save images
# Per run and guest: xl save, image size, xl restore and restore-to-target (from the start of
# xl restore until `xl list` shows 256 MiB again, within 1 MiB, and the console answers) at
# 256 MiB, idle and with SI_USED_MIB in use. ballast: idle is the default 16 MiB self-test
# pattern, in use is `ballast.pattern=SI_USED_MIB`; release off, then on (see si_ballast).
# Linux: one boot, idle first, then a tmpfs file of SI_USED_MIB written from its shell.
# Metrics si_<load>[_off]_<what>, load idle|used; ballast's own release/repopulate times too.
SI_USED_MIB=128
SI_WHAT="save_ms image_mib restore_ms target_ms"

si_missing() { # GUEST KEY NOTE
    for _m in $SI_WHAT; do emit "$1" "si_${2}_$_m" null "$3"; done
}

# si_target GUEST T0 SECS: restore-to-target after an `xl restore` started at T0. One loop polls
# `xl list` (domain id and Mem) until Mem is within 1 MiB of 256 and, as soon as the console pty
# is known, probes the console as answer() does, so neither wait adds to the other. Sets
# SI_MEM_MS (midpoint of the first poll at 256) and SI_ANS_MS (answer seen), both from T0, and
# SI_MIB (last Mem seen). Gives up after SECS, or when Mem has not moved for 8 s below target.
si_target() {
    PROBE=$((PROBE + 1))
    _stag="r${RUN}p${PROBE}"
    if [ "$1" = ballast ]; then _sre="console: read [0-9]+ bytes: \"bench-$_stag-"
    else _sre="bench-42-$_stag-"; fi
    SI_MEM_MS= SI_ANS_MS= SI_MIB=
    _sid= _stty= _sk=0 _snext=0 _slastch=$2 _send=$(( $2 + $3 * 1000 ))
    while :; do
        if [ -z "$SI_MEM_MS" ]; then
            _sa=$(now_ms)
            _sl=$(xl list "$1" 2>/dev/null | awk -v d="$1" '$1 == d { print $2 " " $3 }')
            _sb=$(now_ms)
            _sid=${_sl% *}
            if is_uint "${_sl#* }"; then
                [ "${_sl#* }" != "$SI_MIB" ] && _slastch=$_sb
                SI_MIB=${_sl#* }
                _sd=$((SI_MIB - 256)); [ $_sd -lt 0 ] && _sd=$((-_sd))
                [ $_sd -le 1 ] && SI_MEM_MS=$(( (_sa + _sb) / 2 - $2 ))
            fi
        fi
        if [ -z "$_stty" ] && is_uint "$_sid"; then
            _stty=$(xenstore-read "/local/domain/$_sid/console/tty" 2>/dev/null)
            if [ -c "$_stty" ]; then console_mark "$1"; else _stty=; fi
        fi
        if [ -n "$_stty" ] && [ -z "$SI_ANS_MS" ]; then
            _sn=$(now_ms)
            if [ "$_sn" -ge "$_snext" ]; then
                _sk=$((_sk + 1))
                if [ "$1" = ballast ]; then printf 'bench-%s-%d\r' "$_stag" "$_sk" >"$_stty"
                else printf 'echo bench-$((40+2))-%s-%d\r' "$_stag" "$_sk" >"$_stty"; fi
                _snext=$((_sn + 2000))
            fi
            _console_since_mark "$1" | grep -Eq -e "$_sre" && SI_ANS_MS=$(( $(now_ms) - $2 ))
        fi
        [ -n "$SI_MEM_MS" ] && [ -n "$SI_ANS_MS" ] && return 0
        _sn=$(now_ms)
        [ "$_sn" -ge "$_send" ] && return 1
        [ -z "$SI_MEM_MS" ] && [ -n "$SI_ANS_MS" ] && [ $((_sn - _slastch)) -ge 8000 ] && return 1
        sleep 0.1
    done
}

# si_cycle GUEST KEY: one save + restore of a running guest; emits si_KEY_*.
si_cycle() {
    si_g=$1 si_k=$2
    console_mark "$si_g"
    cp "$LAB_TMP/marks/$si_g" "$LAB_TMP/marks/$si_g.si"
    if ! bxl 120 save "$si_g" "$IMG"; then
        rm -f "$IMG"; si_missing "$si_g" "$si_k" "xl save exit $_xrc after $XL_MS ms: $XL_OUT"; return 1
    fi
    emit "$si_g" "si_${si_k}_save_ms" "$XL_MS"
    emit "$si_g" "si_${si_k}_image_mib" "$(to_mib "$(size_of "$IMG")")"
    [ "$si_g" = ballast ] && [ "$si_k" = idle ] && SI_IDLE_IMAGE_MIB=$(awk -v b="$(size_of "$IMG")" 'BEGIN { print int(b / 1048576) + 1 }')
    wait_gone "$si_g" 10 || log "$si_g still listed after xl save"
    si_t0=$(now_ms)
    if ! bxl 120 restore "$IMG"; then
        rm -f "$IMG"
        emit "$si_g" "si_${si_k}_restore_ms" null "xl restore exit $_xrc: $(printf '%s' "$XL_OUT" | grep -o 'xc: error: [^:]*' | head -n 1)"
        emit "$si_g" "si_${si_k}_target_ms" null "restore failed"
        return 1
    fi
    rm -f "$IMG"
    emit "$si_g" "si_${si_k}_restore_ms" "$XL_MS"
    if ! si_target "$si_g" "$si_t0" 60; then
        emit "$si_g" "si_${si_k}_target_ms" null "Mem ${SI_MIB:-?} MiB (at 256 after ${SI_MEM_MS:-never} ms), answer after ${SI_ANS_MS:-never} ms"
        return 1
    fi
    _tt=$SI_MEM_MS; [ "$SI_ANS_MS" -gt "$_tt" ] && _tt=$SI_ANS_MS
    emit "$si_g" "si_${si_k}_target_ms" "$_tt" "from the start of xl restore: Mem at 256 after $SI_MEM_MS ms, answer after $SI_ANS_MS ms"
    emit "$si_g" "si_${si_k}_answer_ms" "$SI_ANS_MS"
    if [ "$si_g" = ballast ] && [ "${si_k%_off}" = "$si_k" ]; then
        cp "$LAB_TMP/marks/ballast.si" "$LAB_TMP/marks/ballast"
        wait_console ballast 'restock: back to' 5 >/dev/null
        # "suspend: released N free pages (M MiB) to Xen (US us)" -> "N US"
        _rel=$(_console_since_mark ballast | sed -n 's/.*suspend: released \([0-9]*\) free pages ([0-9]* MiB) to Xen (\([0-9]*\) us).*/\1 \2/p' | tail -n 1)
        _rep=$(_console_since_mark ballast | sed -n 's/.*restock: back to [0-9]* of [0-9]* pages \([0-9]*\) us after.*/\1/p' | tail -n 1)
        emit ballast "si_${si_k}_release_ms" "$(echo "$_rel" | awk 'NF { printf "%.1f\n", $2 / 1000 }')" \
            "$([ -z "$_rel" ] && echo no suspend: released line)"
        emit ballast "si_${si_k}_release_us_per_mib" "$(echo "$_rel" | awk 'NF && $1 > 0 { printf "%.1f\n", $2 * 256 / $1 }')"
        emit ballast "si_${si_k}_repop_ms" "$(echo "$_rep" | awk 'NF { printf "%.1f\n", $1 / 1000 }')" \
            "$([ -z "$_rep" ] && echo no restock: back to line)"
    fi
    return 0
}

# si_fill_linux: from the Linux guest's shell, write SI_USED_MIB to a file on a fresh tmpfs;
# waits for the shell's answer (Shmem from /proc/meminfo), sets SI_SHMEM_MIB.
si_fill_linux() {
    SI_SHMEM_MIB=
    _id=$(domid linux-guest)
    _tty=$(xenstore-read "/local/domain/$_id/console/tty" 2>/dev/null)
    [ -c "$_tty" ] || return 1
    console_mark linux-guest
    printf 'mkdir -p /hold; mount -t tmpfs -o size=%dm tmpfs /hold; dd if=/dev/zero of=/hold/fill bs=1M count=%d 2>/dev/null; echo si-hold-$((40+2))-r%d $(grep Shmem: /proc/meminfo)\r' \
        $((SI_USED_MIB + 64)) "$SI_USED_MIB" "$RUN" >"$_tty"
    _l=$(wait_console linux-guest "si-hold-42-r$RUN Shmem: *[0-9]+ kB" 90) || return 1
    SI_SHMEM_MIB=$(printf '%s\n' "$_l" | sed -n 's/.*Shmem: *\([0-9]*\) kB.*/\1/p' | awk 'NF { printf "%d\n", $1 / 1024 }')
    is_uint "$SI_SHMEM_MIB" && [ "$SI_SHMEM_MIB" -ge "$SI_USED_MIB" ]
}

# ballast_off_then_on KIND: per load one boot with `ballast.release=0` on the command line: the
# KIND cycle (si: save + restore, mig: live migration) with the switch off first, then dom0 writes
# data/suspend/release = 1 (read at the next suspend, same switch) and the cycle with it on. Uses
# KIND_cycle GUEST KEY and KIND_missing GUEST KEY NOTE.
ballast_off_then_on() {
    for _bl in idle used; do
        _bx="ballast.release=0"
        [ "$_bl" = used ] && _bx="ballast.pattern=$SI_USED_MIB $_bx"
        if ! boot ballast "extra=\"$_bx\""; then
            "$1_missing" ballast "${_bl}_off" "boot ($_bx) not ready"
            "$1_missing" ballast "$_bl" "boot ($_bx) not ready"; destroy ballast; continue
        fi
        if [ "$_bl" = used ] && ! wait_console ballast "selftest: pattern of $SI_USED_MIB MiB written" 60 >/dev/null; then
            "$1_missing" ballast "${_bl}_off" "no 'pattern of $SI_USED_MIB MiB written' line"
            "$1_missing" ballast "$_bl" "no 'pattern of $SI_USED_MIB MiB written' line"; destroy ballast; continue
        fi
        sleep 1
        if ! "$1_cycle" ballast "${_bl}_off"; then
            "$1_missing" ballast "$_bl" "the release=0 cycle before it failed"
        elif ! xenstore-write "/local/domain/$(domid ballast)/data/suspend/release" 1; then
            "$1_missing" ballast "$_bl" "xenstore-write data/suspend/release failed"
        else
            sleep 1
            "$1_cycle" ballast "$_bl"
        fi
        destroy ballast
    done
}

si_ballast() { ballast_off_then_on si; }

si_linux() {
    if ! boot linux-guest; then
        si_missing linux-guest idle "boot not ready"; si_missing linux-guest used "boot not ready"
        destroy linux-guest; return 1
    fi
    sleep 2
    if ! si_cycle linux-guest idle; then
        destroy linux-guest
        boot linux-guest || { si_missing linux-guest used "fresh boot not ready"; destroy linux-guest; return 1; }
    fi
    if si_fill_linux; then
        log "linux-guest: $SI_USED_MIB MiB written to a tmpfs file, Shmem $SI_SHMEM_MIB MiB"
        sleep 1
        si_cycle linux-guest used
    else
        si_missing linux-guest used "writing $SI_USED_MIB MiB to tmpfs failed (Shmem ${SI_SHMEM_MIB:-?} MiB)"
    fi
    destroy linux-guest
}

# ---------------------------------------------------------------- live migration
# Per run and guest: `xl migrate` to localhost of a 256 MiB guest, idle and with SI_USED_MIB in
# use (ballast: `ballast.pattern=SI_USED_MIB`; Linux: the tmpfs file). Metrics mig_<load>[_off]_*:
# ms (xl migrate wall time), down_ms (downtime: the longest stretch in which dom0's `xl list` poll,
# one pass every ~0.2-0.3 s under TCG, saw no domain of the guest running: sender suspended,
# receiver still paused) and answer_ms (from xl migrate's return until the console answers).
# ballast migrates with the suspend-time release off first (`ballast.release=0`), then on.
MIG_WHAT="ms down_ms answer_ms"

mig_missing() { # GUEST KEY NOTE
    for _m in $MIG_WHAT; do emit "$1" "mig_${2}_$_m" null "$3"; done
}

# mig_poll GUEST FILE: until $LAB_TMP/mig-polling goes, one line per `xl list` pass: the dom0
# time and whether a domain of GUEST (its name, or a temporary name of a migration) runs.
mig_poll() {
    while [ -f "$LAB_TMP/mig-polling" ]; do
        _pt=$(now_ms)
        _pu=$(xl list 2>/dev/null | awk -v g="$1" 'index($1, g) == 1 && $5 ~ /^[r-][b-]-/ && $5 ~ /[rb]/ { u = 1 } END { print u + 0 }')
        echo "$_pt $_pu"
    done >"$2"
}

# mig_cycle GUEST KEY: one live migration of a running guest; emits mig_KEY_*.
mig_cycle() {
    _g=$1 _k=$2 _pf=$LAB_TMP/mig-poll
    : >"$LAB_TMP/mig-polling"
    mig_poll "$_g" "$_pf" &
    _pp=$!
    migrate "$_g" 180; _r=$?
    rm -f "$LAB_TMP/mig-polling"
    wait "$_pp"
    if [ $_r -ne 0 ]; then
        mig_missing "$_g" "$_k" "xl migrate exit $_r after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | grep -m1 -i 'error' | _oneline)"
        return 1
    fi
    emit "$_g" "mig_${_k}_ms" "$XL_MS"
    # downtime: from the last pass that saw the guest running to the next one that did
    _down=$(awk '$2 == 1 { if (seen && down) { g = $1 - last; if (g > max) max = g } last = $1; seen = 1; down = 0 }
                 $2 == 0 && seen { down = 1 }
                 END { if (max) print max }' "$_pf")
    emit "$_g" "mig_${_k}_down_ms" "$_down" "$([ -z "$_down" ] && echo "the poll never saw the guest stop and run again ($(wc -l <"$_pf") passes)")"
    if [ "$_g" = ballast ]; then
        wait_console ballast 'suspend: done: Resumed' 10 >/dev/null
        _t=$(_console_since_mark ballast | sed -n 's/.*suspend: done: Resumed, total \([0-9]*\) us.*/\1/p' | tail -n 1)
        emit ballast "mig_${_k}_guest_ms" "$(echo "$_t" | awk 'NF { printf "%.1f\n", $1 / 1000 }')" \
            "$([ -z "$_t" ] && echo no suspend: done line)"
    fi
    if answer "$_g" 30; then emit "$_g" "mig_${_k}_answer_ms" "$ANSWER_MS"
    else emit "$_g" "mig_${_k}_answer_ms" null "no console answer within 30 s"; return 1; fi
    return 0
}

mig_ballast() { ballast_off_then_on mig; }

mig_linux() {
    if ! boot linux-guest; then
        mig_missing linux-guest idle "boot not ready"; mig_missing linux-guest used "boot not ready"
        destroy linux-guest; return 1
    fi
    sleep 2
    if mig_cycle linux-guest idle && si_fill_linux; then
        sleep 1
        mig_cycle linux-guest used
    else
        mig_missing linux-guest used "the idle migration or writing $SI_USED_MIB MiB to tmpfs failed"
    fi
    destroy linux-guest
}

# ---------------------------------------------------------------- several vCPUs
# Per run and guest, each booted idle at its own 256 MiB with vcpus=1 and then vcpus=4: xl save +
# xl restore with the guest-side suspend and resume figures (tags v1, v4), and at 4 vCPUs one
# live migration (mig_v4_*). For ballast every suspend quiesces the other vCPUs in a rendezvous;
# Linux parks them in stop_machine.
SMP_WHAT="save_TAG_ms image_TAG_mib restore_TAG_ms restore_TAG_answer_ms guest_suspend_resume_TAG_ms guest_suspend_TAG_ms guest_resume_TAG_ms"
smp_missing() { # GUEST TAG NOTE
    for _m in $SMP_WHAT; do emit "$1" "$(echo "$_m" | sed "s/TAG/$2/")" null "$3"; done
}
smp_guest() {
    _sg=$1   # (boot and the helpers it calls use _n, _g, _t0: own names here)
    for _sv in 1 4; do
        if ! boot "$_sg" "vcpus=$_sv"; then
            smp_missing "$_sg" "v$_sv" "boot with vcpus=$_sv not ready"
            [ $_sv = 4 ] && mig_missing "$_sg" v4 "boot with vcpus=4 not ready"
            destroy "$_sg"; continue
        fi
        sleep 2
        if ! save_restore "$_sg" "v$_sv"; then
            [ $_sv = 4 ] && mig_missing "$_sg" v4 "the save/restore before it failed"
            destroy "$_sg"; continue
        fi
        if [ $_sv = 4 ]; then
            sleep 1
            mig_cycle "$_sg" v4
        fi
        destroy "$_sg"
    done
}

# ---------------------------------------------------------------- limits
# Per run, ballast only, after its small-image figures:
# - the hypervisor's limit: ballast booted with `ballast.hvlimit=1` releases and repopulates its
#   free memory with nothing but the hypercalls its release and restock send (every request built
#   beforehand), then with its own mechanism, back to back (kernel mm::limit_probe); us per MiB.
# - the toolstack's floor: xl save and xl restore of ballast booted with memory=maxmem= the size of
#   this run's idle image (SI_IDLE_IMAGE_MIB, rounded up) and release off: as many pages as the
#   idle image holds, and no guest-side release or restock.
LIMIT_RE='limit: bare hypercalls: [0-9]+ pages released in [0-9]+ us, repopulated in [0-9]+ us; ballast: [0-9]+ pages released in [0-9]+ us, repopulated in [0-9]+ us'
limits_ballast() {
    if boot ballast 'extra="ballast.hvlimit=1"' && _ll=$(wait_console ballast "$LIMIT_RE" 90); then
        _lv=$(printf '%s\n' "$_ll" | tail -n 1 | grep -Eo "$LIMIT_RE" | tr -c '0-9\n' ' ' | awk '{ print $1, $2, $3, $4, $5, $6 }')
        # pages, us -> us per MiB
        per_mib() { echo "$1 $2" | awk '$1 > 0 { printf "%.1f\n", $2 * 256 / $1 }'; }
        set -- $_lv
        emit ballast limit_bare_release_us_per_mib "$(per_mib "$1" "$2")"
        emit ballast limit_bare_populate_us_per_mib "$(per_mib "$1" "$3")"
        emit ballast limit_ballast_release_us_per_mib "$(per_mib "$4" "$5")"
        emit ballast limit_ballast_populate_us_per_mib "$(per_mib "$4" "$6")"
        # where the bare release's time goes: clearing the mappings, or Xen freeing the frames
        _ls=$(_console_since_mark ballast | sed -n 's/.*limit: of the bare release, unmapping took \([0-9]*\) us, the decreases \([0-9]*\) us.*/\1 \2/p' | tail -n 1)
        emit ballast limit_bare_unmap_us_per_mib "$(per_mib "$1" "$(echo "$_ls" | cut -d' ' -f1)")" "$([ -z "$_ls" ] && echo no split line)"
        emit ballast limit_bare_decrease_us_per_mib "$(per_mib "$1" "$(echo "$_ls" | cut -d' ' -f2)")" "$([ -z "$_ls" ] && echo no split line)"
    else
        for _m in bare_release bare_populate ballast_release ballast_populate bare_unmap bare_decrease; do
            emit ballast "limit_${_m}_us_per_mib" null "no limit line: $(_console_since_mark ballast | tail -n 2 | _oneline)"
        done
    fi
    destroy ballast

    _fm=$SI_IDLE_IMAGE_MIB
    if ! is_uint "$_fm"; then
        for _m in save_ms restore_ms image_mib; do emit ballast "floor_$_m" null "no idle image size this run"; done
        return 1
    fi
    emit ballast floor_mib "$_fm"
    if ! boot ballast "memory=$_fm" "maxmem=$_fm" 'extra="ballast.release=0"'; then
        for _m in save_ms restore_ms image_mib; do emit ballast "floor_$_m" null "memory=$_fm did not boot"; done
        destroy ballast; return 1
    fi
    sleep 2
    if bxl 90 save ballast "$IMG"; then
        emit ballast floor_save_ms "$XL_MS"
        emit ballast floor_image_mib "$(to_mib "$(size_of "$IMG")")"
        wait_gone ballast 10
        if bxl 90 restore "$IMG"; then emit ballast floor_restore_ms "$XL_MS"
        else emit ballast floor_restore_ms null "xl restore exit $_xrc: $XL_OUT"; fi
    else
        emit ballast floor_save_ms null "xl save exit $_xrc: $XL_OUT"
    fi
    rm -f "$IMG"
    destroy ballast
}

# ---------------------------------------------------------------- suspend event channel
# Per run, ballast only: the same idle guest (release on), once offering the suspend event channel
# (the default) and once not (`ballast.suspend_evtchn=0`: libxl writes control/shutdown and waits
# for the guest's acknowledgement through xenstore): xl save -c, xl save, xl restore and xl
# migrate, each timed by its wall time. Metrics chan_{on,off}_{ckpt,save,restore,mig}_ms.
CHAN_WHAT="ckpt_ms save_ms restore_ms mig_ms"
chan_missing() { for _m in $CHAN_WHAT; do emit ballast "chan_${1}_$_m" null "$2"; done; }
# chan_ready MODE: with the channel on, wait until the guest offers it (again, after a restore)
chan_ready() { [ "$1" = off ] || xs_wait_uint ballast device/suspend/event-channel 10 >/dev/null; }
channel_ballast() {
    for _cm in on off; do
        if [ "$_cm" = on ]; then boot ballast; else boot ballast 'extra="ballast.suspend_evtchn=0"'; fi ||
            { chan_missing "$_cm" "boot not ready"; destroy ballast; continue; }
        sleep 2
        chan_ready "$_cm" || { chan_missing "$_cm" "no port in device/suspend/event-channel"; destroy ballast; continue; }
        console_mark ballast
        if checkpoint ballast 60 && answer ballast 30; then emit ballast "chan_${_cm}_ckpt_ms" "$XL_MS"
        else emit ballast "chan_${_cm}_ckpt_ms" null "xl save -c exit $_xrc or no answer after it"; fi
        _how=$(_console_since_mark ballast | grep -c 'suspend requested through the event channel')
        [ "$_cm" = on ] && [ "$_how" -eq 0 ] && log "chan: libxl did not use the offered channel for xl save -c"
        [ "$_cm" = off ] && [ "$_how" -ne 0 ] && log "chan: a channel was used although none was offered"
        sleep 1
        if bxl 120 save ballast "$IMG"; then
            emit ballast "chan_${_cm}_save_ms" "$XL_MS"
            wait_gone ballast 10 || log "ballast still listed after xl save"
            if bxl 120 restore "$IMG" && answer ballast 30; then emit ballast "chan_${_cm}_restore_ms" "$XL_MS"
            else emit ballast "chan_${_cm}_restore_ms" null "xl restore exit $_xrc or no answer after it"; fi
        else
            emit ballast "chan_${_cm}_save_ms" null "xl save exit $_xrc: $XL_OUT"
            emit ballast "chan_${_cm}_restore_ms" null "save failed"
        fi
        rm -f "$IMG"
        if is_uint "$(domid ballast)" && chan_ready "$_cm"; then
            sleep 1
            if migrate ballast 180 && answer ballast 30; then emit ballast "chan_${_cm}_mig_ms" "$XL_MS"
            else emit ballast "chan_${_cm}_mig_ms" null "xl migrate exit $_xrc or no answer after it"; fi
        else
            emit ballast "chan_${_cm}_mig_ms" null "no running guest offering the channel after the restore"
        fi
        destroy ballast
    done
}

# ---------------------------------------------------------------- main
log "runs=$RUNS ladder=[$LADDER] boot sizes=[$BOOT_SIZES]; $(df -k "$IMGDIR" | awk 'NR == 2 { printf "image tmpfs %d MiB free", $4 / 1024 }'); $(free -m | awk '/^Mem:/ { printf "dom0 free %s MiB", $4 }')"
T_START=$(now_ms)
RUN=1
while [ $RUN -le "$RUNS" ]; do
    if [ $((RUN % 2)) -eq 1 ]; then order="ballast linux-guest"; else order="linux-guest ballast"; fi
    for g in $order; do
        T_G=$(now_ms)
        if [ "$ONLY" = limit ]; then
            [ "$g" = ballast ] || continue
            SI_IDLE_IMAGE_MIB=24
            limits_ballast
            pass "run$RUN-limits" "hypervisor limit and toolstack floor (run $RUN) took $(( $(now_ms) - T_G )) ms"
            continue
        fi
        if [ "$ONLY" = chan ]; then
            [ "$g" = ballast ] || continue
            channel_ballast
            pass "run$RUN-channel" "suspend event channel on and off (run $RUN) took $(( $(now_ms) - T_G )) ms"
            continue
        fi
        if [ "$ONLY" = smp ]; then
            smp_guest "$g"
            pass "run$RUN-$g-smp" "1- and 4-vCPU figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
            continue
        fi
        if [ "$ONLY" = daemon ]; then
            daemon_guest "$g"
            pass "run$RUN-$g-daemon" "ballastd figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
            continue
        fi
        if [ "$ONLY" = pv ]; then
            pv_guest "$g"
            pass "run$RUN-$g-pv" "PV disk and network figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
            continue
        fi
        if [ "$ONLY" = mig ]; then
            if [ "$g" = ballast ]; then mig_ballast; else mig_linux; fi
            pass "run$RUN-$g-migrate" "migration figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
            continue
        fi
        if run_guest "$g"; then pass "run$RUN-$g" "run $RUN of $g completed in $(( $(now_ms) - T_G )) ms"
        else pass "run$RUN-$g" "run $RUN of $g stopped early after $(( $(now_ms) - T_G )) ms (figures after the failing step are missing)"; fi
        T_G=$(now_ms)
        if [ "$g" = ballast ]; then si_ballast; else si_linux; fi
        pass "run$RUN-$g-small-images" "small-image figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
        T_G=$(now_ms)
        if [ "$g" = ballast ]; then mig_ballast; else mig_linux; fi
        pass "run$RUN-$g-migrate" "migration figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
        T_G=$(now_ms)
        smp_guest "$g"
        pass "run$RUN-$g-smp" "1- and 4-vCPU figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
        T_G=$(now_ms)
        daemon_guest "$g"
        pass "run$RUN-$g-daemon" "ballastd figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
        T_G=$(now_ms)
        pv_guest "$g"
        pass "run$RUN-$g-pv" "PV disk and network figures of $g (run $RUN) took $(( $(now_ms) - T_G )) ms"
        if [ "$g" = ballast ]; then
            T_G=$(now_ms)
            limits_ballast
            pass "run$RUN-limits" "hypervisor limit and toolstack floor (run $RUN) took $(( $(now_ms) - T_G )) ms"
            T_G=$(now_ms)
            channel_ballast
            pass "run$RUN-channel" "suspend event channel on and off (run $RUN) took $(( $(now_ms) - T_G )) ms"
        fi
    done
    RUN=$((RUN + 1))
done
RUN=0
[ -n "$ONLY" ] || for g in ballast linux-guest; do
    T_G=$(now_ms)
    min_boot "$g"
    pass "min-boot-$g" "memory search for $g took $(( $(now_ms) - T_G )) ms"
done
log "{\"total_ms\":$(( $(now_ms) - T_START )),\"runs\":$RUNS}"
