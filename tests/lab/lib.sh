# Helpers for lab scenarios, sourced by tests/scenarios/*.sh inside dom0 (busybox ash).
#
# Console protocol (parsed by tests/lab/run.py; one line each, nothing before the @@):
#   @@BEGIN <scenario>
#   @@RESULT PASS <scenario>/<check> <evidence>
#   @@RESULT FAIL <scenario>/<check> <evidence>
#   @@END <scenario> rc=<exit status>
#   [xl] <line>            output (stdout+stderr) of an xl command run through xlc
#   [guest <dom>] <line>   a guest console line (dumped at scenario end, or streamed by tail_console)
#   @@LAB <text>           lab/dom0 status
#
# Helpers:
#   pass NAME EVIDENCE...          report a passed check
#   fail NAME EVIDENCE...          report a failed check (scenario exit status becomes 1)
#   expect NAME CMD...             run CMD (stdout+stderr captured); pass if it succeeds, evidence = output
#   expect_fail NAME CMD...        the opposite: pass if CMD fails
#   xlc ARGS...                    run `xl ARGS`, echo "[xl] " lines, keep output in $XL_OUT, return xl's status
#   expect_xl NAME ARGS...         xlc + pass/fail with xl's output as evidence
#   console_log DOM                path of DOM's console log written by xenconsoled
#   console_mark DOM               later wait_console DOM only looks at output after this point
#   wait_until SECS CMD...         run CMD until it succeeds (0) or SECS have passed (1): every wait below
#   wait_console DOM REGEX SECS    wait for an ERE match on DOM's console; prints the line; 1 on timeout
#   expect_console NAME DOM REGEX SECS   wait_console + pass (evidence: line and elapsed ms) / fail (console tail)
#   wait_gone DOM SECS             wait until DOM is no longer in `xl list`
#   expect_gone NAME SECS DOM...   pass if every DOM leaves `xl list` within SECS
#   destroy_gone DNAME GNAME SECS DOM...  `xl destroy` each DOM (check DNAME, DNAME-DOM for several), then expect_gone GNAME
#   wait_state DOM STATES SECS     wait until domstate DOM is one of the letters in STATES (e.g. "rb")
#   domstate DOM                   state letters from `xl list` (r b p s c d), "-" if none, "gone" if absent
#   domid DOM                      domain id, empty if absent
#   now_ms                         milliseconds since dom0 boot (10 ms resolution)
#   dump_console DOM               print DOM's console log as "[guest DOM] ..." lines
#   tail_console DOM SECS          stream DOM's console live for SECS seconds
#   log TEXT...                    "@@LAB <scenario>: TEXT" line
#   xs_read DOM PATH               DOM's xenstore value PATH (DOM: name or domid); the error message on failure
#   pattern_ok NAME DOM [SECS]     DOM's memory pattern is intact (fresh verification, no damage, counter 0)
#   console_type DOM TEXT          type TEXT and Enter on DOM's console (the reference Linux guest runs a shell there)
# PV disks and networks (dom0 runs xen-blkback and xen-netback; vifs join bridge xenbr0, where
# dom0 is 10.0.0.1/24; xl runs the lab's hotplug scripts /lab/hotplug/vif and /lab/hotplug/block,
# which log one line per action to $HOTPLUG_LOG):
#   disk_new IMAGE MIB             zero-filled IMAGE of MIB MiB (put it in $DISK_DIR, a tmpfs of its own) on a free loop device; prints the device
#   disk_spec LOOPDEV [VDEV] [ACCESS]   disk spec for `disk = [...]` / `xl block-attach` (default xvda, rw; target= last)
#   vif_spec DOM                   vif spec with DOM's fixed MAC (vif_mac DOM), bridge=xenbr0 and the lab's script
#   disk_line IMAGE SECTOR         first line of a 512-byte sector of IMAGE (NULs dropped), e.g. "ballast-blk sector=N gen=G"
#   disk_put_line IMAGE SECTOR TEXT     write TEXT and a newline, zero-padded, over that sector
#   disk_free LOOPDEV              detach the loop device (deferred by the kernel while a backend still holds it)
#   loop_bound LOOPDEV             the loop device still has a file attached
#   pv_states DOM                  "vbd[VDEV=STATE ...] vif[IDX=STATE ...]" from xl block-list / network-list (4 = connected)
#   expect_pv_states NAME DOM WANT SECS   pass once pv_states DOM reads WANT within SECS
#   ping_wait ADDR SECS            ping ADDR from dom0 10 times a second until it answers (0) or SECS pass (1)
#   hotplug_lines                  hotplug log lines written since the scenario started
#   fs_free_mib PATH               MiB free in PATH's file system (/tmp and $DISK_DIR are tmpfs of their own)
# At exit every guest console log is dumped (once), and the scenario's hotplug log lines, so
# run.py's output carries the evidence.

SCENARIO=${SCENARIO:-$(basename "$0" .sh)}
CONSOLE_DIR=/var/log/xen/console
LAB_TMP=/tmp/lab-$SCENARIO
mkdir -p "$LAB_TMP/marks"
_LAB_FAILED=0
XL_OUT=

_oneline() { tr '\r\n\t' '   ' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-400; }
_result() { # STATUS NAME EVIDENCE...
    _st=$1 _nm=$2; shift 2
    echo "@@RESULT $_st $SCENARIO/$_nm $(printf '%s' "$*" | _oneline)"
}
log() { echo "@@LAB $SCENARIO: $*"; }
pass() { _n=$1; shift; _result PASS "$_n" "$@"; }
fail() { _n=$1; shift; _LAB_FAILED=1; _result FAIL "$_n" "$@"; }

expect() {
    _n=$1; shift
    if _out=$("$@" 2>&1); then pass "$_n" "\$ $* -> ${_out:-ok}"; return 0
    else _rc=$?; fail "$_n" "\$ $* -> rc=$_rc ${_out}"; return 1; fi
}
expect_fail() {
    _n=$1; shift
    if _out=$("$@" 2>&1); then fail "$_n" "\$ $* unexpectedly succeeded: ${_out}"; return 1
    else _rc=$?; pass "$_n" "\$ $* -> rc=$_rc ${_out}"; return 0; fi
}

xlc() {
    echo "[xl] \$ xl $*"
    XL_OUT=$(xl "$@" 2>&1)
    _xrc=$?
    [ -n "$XL_OUT" ] && printf '%s\n' "$XL_OUT" | sed 's/^/[xl] /'
    [ $_xrc -ne 0 ] && echo "[xl] (exit status $_xrc)"
    return $_xrc
}
expect_xl() {
    _n=$1; shift
    if xlc "$@"; then pass "$_n" "xl $* -> ${XL_OUT:-ok}"; return 0
    else fail "$_n" "xl $* -> rc=$_xrc ${XL_OUT}"; return 1; fi
}

now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# wait_until SECS CMD...: run CMD (in this shell, so it can leave what it saw in variables) every
# 0.2 s until it succeeds (returns 0) or SECS have passed (returns 1). CMD runs at least once, and
# once more at or after the deadline. The one deadline loop: not to be nested.
wait_until() {
    _wu_end=$(( $(now_ms) + $1 * 1000 )); shift
    while :; do
        "$@" && return 0
        [ "$(now_ms)" -ge "$_wu_end" ] && return 1
        sleep 0.2
    done
}

domid() { xl domid "$1" 2>/dev/null; }
domstate() {
    _l=$(xl list "$1" 2>/dev/null | awk -v d="$1" '$1 == d { print $5 }')
    if [ -z "$_l" ]; then echo gone; return 1; fi
    _l=$(echo "$_l" | tr -d -- '-')
    echo "${_l:--}"
}
_absent() { ! xl domid "$1" >/dev/null 2>&1; }
wait_gone() { wait_until "$2" _absent "$1"; } # DOM SECS
# expect_gone NAME SECS DOM...: every DOM has left `xl list` within SECS (each waited for in turn)
expect_gone() {
    _gn=$1 _gs=$2; shift 2
    for _gd in "$@"; do
        wait_gone "$_gd" "$_gs" || { fail "$_gn" "$_gd still listed after $_gs s: $(xl list 2>&1 | tr '\n' ' ')"; return 1; }
    done
    pass "$_gn" "$* absent from xl list"
}
# destroy_gone DNAME GNAME SECS DOM...: `xl destroy` each DOM as check DNAME (DNAME-DOM when several
# DOMs are given), then check GNAME: all of them have left `xl list` within SECS
destroy_gone() {
    _dn=$1 _dg=$2 _dsecs=$3; shift 3
    for _dd in "$@"; do
        if [ $# -gt 1 ]; then expect_xl "$_dn-$_dd" destroy "$_dd"; else expect_xl "$_dn" destroy "$_dd"; fi
    done
    expect_gone "$_dg" "$_dsecs" "$@"
}
_state_in() { # DOM STATES: domstate DOM (left in _s) is one of STATES
    _s=$(domstate "$1")
    case $_s in gone | -) return 1 ;; *["$2"]*) return 0 ;; esac
    return 1
}
wait_state() { # DOM STATES SECS; prints the state reached
    if wait_until "$3" _state_in "$1" "$2"; then echo "$_s"; return 0; fi
    echo "$_s"; return 1
}

# A domain that migrated writes to the log of the name it was created with on the receiving
# side (DOM--incoming): `migrate` records that as DOM's console from then on.
console_log() {
    if [ -f "$LAB_TMP/alias-$1" ]; then echo "$CONSOLE_DIR/guest-$(cat "$LAB_TMP/alias-$1").log"
    else echo "$CONSOLE_DIR/guest-$1.log"; fi
}
console_mark() {
    _f=$(console_log "$1")
    if [ -f "$_f" ]; then wc -c <"$_f" | tr -d ' '; else echo 0; fi >"$LAB_TMP/marks/$1"
}
_console_since_mark() {
    _f=$(console_log "$1")
    [ -f "$_f" ] || return 0
    _m=0; [ -f "$LAB_TMP/marks/$1" ] && _m=$(cat "$LAB_TMP/marks/$1")
    tail -c +$((_m + 1)) "$_f" | tr -d '\r'
}
_console_has() { _line=$(_console_since_mark "$1" | grep -E -m1 -e "$2"); [ -n "$_line" ]; } # DOM REGEX
wait_console() { # DOM REGEX SECS
    wait_until "$3" _console_has "$1" "$2" || return 1
    printf '%s\n' "$_line"
}
# answered_first DOM: answer first, repopulate after: since the console mark, the guest's tasks
# thawed ("suspend: done") before the released memory was all back ("restock: back to").
answered_first() {
    _af=$(_console_since_mark "$1" | grep -nE 'suspend: done: (Resumed|Cancelled)|restock: back to' | cut -d: -f2- | _oneline)
    case $_af in
        *'suspend: done'*'restock: back to'*) pass answered-first "$1 thawed, then took its memory back: $(printf '%s' "$_af" | cut -c1-300)" ;;
        *) fail answered-first "$1: expected 'suspend: done' before 'restock: back to', saw: $(printf '%s' "$_af" | cut -c1-300)" ;;
    esac
}
expect_console() { # NAME DOM REGEX SECS
    _t0=$(now_ms)
    if _l=$(wait_console "$2" "$3" "$4"); then
        pass "$1" "$_l (after $(( $(now_ms) - _t0 )) ms)"; return 0
    fi
    fail "$1" "no console line matching /$3/ from $2 within $4 s; console tail: $(_console_since_mark "$2" | tail -n 5 | _oneline)"
    return 1
}
dump_console() {
    _f=$(console_log "$1")
    [ -f "$_f" ] || { echo "[guest $1] (no console log)"; return 0; }
    tr -d '\r' <"$_f" | sed "s/^/[guest $1] /"
}
tail_console() { # DOM SECS
    _f=$(console_log "$1")
    _cr=$(printf '\r')
    timeout "$2" tail -n +1 -F "$_f" 2>/dev/null | while IFS= read -r _l; do echo "[guest $1] ${_l%"$_cr"}"; done
    : >"$LAB_TMP/dumped-$1"
}

# console_type DOM TEXT: TEXT and Enter reach DOM's console input through xenconsoled's pty
console_type() {
    _tty=$(xs_read "$1" console/tty)
    [ -c "$_tty" ] || { echo "console/tty of $1 is '$_tty', not a character device"; return 1; }
    printf '%s\r' "$2" >"$_tty"
}

# ---- PV disks and networks ------------------------------------------------------
DISK_DIR=/disks
HOTPLUG_LOG=/var/log/xen/lab-hotplug.log
HOTPLUG_VIF=/lab/hotplug/vif
HOTPLUG_BLOCK=/lab/hotplug/block
# the log is shared by the boot's scenarios: this one's lines start here
_HP_MARK=0
[ -f "$HOTPLUG_LOG" ] && _HP_MARK=$(wc -c <"$HOTPLUG_LOG" | tr -d ' ')
hotplug_lines() { [ -f "$HOTPLUG_LOG" ] && tail -c +$((_HP_MARK + 1)) "$HOTPLUG_LOG"; }
disk_new() { # IMAGE MIB
    dd if=/dev/zero of="$1" bs=1M count="$2" 2>/dev/null
    [ "$(file_size "$1")" = $(( $2 * 1048576 )) ] || { echo "disk_new: $1 is not $2 MiB: $(df -k "${1%/*}" | tail -n 1)" >&2; return 1; }
    _ld=$(losetup -f) && losetup "$_ld" "$1" || { echo "disk_new: no loop device for $1" >&2; return 1; }
    echo "$_ld"
}
disk_spec() { echo "format=raw,vdev=${2:-xvda},access=${3:-rw},backendtype=phy,script=$HOTPLUG_BLOCK,target=$1"; }
# vif_mac DOM: Xen's OUI and three bytes of the MD5 of DOM's name: the same guest always gets the
# same MAC, so dom0's ARP entry stays right across detach and attach
vif_mac() { printf '%s' "$1" | md5sum | sed 's/^\(..\)\(..\)\(..\).*/00:16:3e:\1:\2:\3/'; }
vif_spec() { echo "mac=$(vif_mac "$1"),bridge=xenbr0,script=$HOTPLUG_VIF"; }
disk_line() { dd if="$1" bs=512 skip="$2" count=1 2>/dev/null | tr -d '\000' | head -n 1; } # IMAGE SECTOR
disk_put_line() { printf '%s\n' "$3" | dd of="$1" bs=512 seek="$2" count=1 conv=notrunc,sync 2>/dev/null; } # IMAGE SECTOR TEXT
disk_free() { losetup -d "$1"; }
loop_bound() { [ -e "/sys/block/${1##*/}/loop" ]; }
pv_states() {
    _vb=$(xl block-list "$1" 2>/dev/null | awk 'NR > 1 { printf "%s%s=%s", s, $1, $4; s = " " }')
    _vn=$(xl network-list "$1" 2>/dev/null | awk 'NR > 1 { printf "%s%s=%s", s, $1, $5; s = " " }')
    echo "vbd[$_vb] vif[$_vn]"
}
_pv_states_are() { _pvs=$(pv_states "$1"); [ "$_pvs" = "$2" ]; } # DOM WANT (last read in _pvs)
expect_pv_states() { # NAME DOM WANT SECS
    _t0=$(now_ms)
    if wait_until "$4" _pv_states_are "$2" "$3"; then pass "$1" "$2: $_pvs (after $(( $(now_ms) - _t0 )) ms)"; return 0; fi
    fail "$1" "$2: $_pvs after $4 s, want $3"; return 1
}
# ping_wait ADDR SECS: 1 s ping runs one after the other (a run that errs out early, say for want
# of a neighbour, is simply followed by the next); the replies are in $LAB_TMP/ping.out
ping_wait() {
    _po=$LAB_TMP/ping.out
    : >"$_po"; rm -f "$_po.stop"
    _pend=$(( $(now_ms) + $2 * 1000 ))
    while [ ! -f "$_po.stop" ] && [ "$(now_ms)" -lt "$_pend" ]; do ping -i 0.1 -w 1 "$1" >>"$_po" 2>&1; done &
    _pp=$!
    wait_until "$2" grep -q 'bytes from' "$_po"; _pr=$?
    : >"$_po.stop"; wait "$_pp" 2>/dev/null
    return $_pr
}

_lab_exit() {
    _rc=$?
    for _f in "$CONSOLE_DIR"/guest-*.log; do
        [ -f "$_f" ] || continue
        _d=${_f##*/guest-}; _d=${_d%.log}
        [ -f "$LAB_TMP/dumped-$_d" ] && continue
        dump_console "$_d"
    done
    hotplug_lines | sed 's/^/[hotplug] /'
    [ $_rc -eq 0 ] && _rc=$_LAB_FAILED
    exit $_rc
}
trap _lab_exit EXIT
trap "exit 143" TERM INT

# ---- helpers for memory and image scenarios ----------------------------------
xl_mem_of() { xl list "$1" 2>/dev/null | awk -v d="$1" '$1 == d { print $3 }'; }  # DOM -> MiB
file_size() { stat -c %s "$1" 2>/dev/null || wc -c <"$1" | tr -d ' '; }
# fs_free_mib PATH: MiB free in PATH's file system (by stat: busybox df prints no line for the rootfs)
fs_free_mib() { stat -f -c '%a %S' "$1" | awk '{ printf "%d\n", $1 * $2 / 1048576 }'; }
_mem_near() { # DOM MIB: `xl list` shows MIB within the 1 MiB slack
    _m=$(xl_mem_of "$1")
    [ -n "$_m" ] || return 1
    _md=$(( _m - $2 )); [ $_md -lt 0 ] && _md=$(( -_md ))
    [ $_md -le 1 ]
}
wait_mem() { wait_until "$3" _mem_near "$1" "$2"; } # DOM MIB SECS
expect_mem() { # NAME DOM MIB SECS
    if wait_mem "$2" "$3" "$4"; then pass "$1" "xl list: $2 has $(xl_mem_of "$2") MiB (want $3 within 1)"
    else fail "$1" "xl list: $2 has $(xl_mem_of "$2") MiB after $4 s, want $3"; fi
}
# ---- helpers for suspend scenarios --------------------------------------------
# A scenario sets OURS (domains it may create), IMAGES (files to delete) and LOOPS (loop devices
# to detach) and installs `trap _scenario_exit EXIT`: whatever happens, nothing is left.
xl_bounded() { # SECS ARGS...: `xl ARGS` under `timeout SECS`, echoed like xlc
    _s=$1; shift
    echo "[xl] \$ xl $* (bounded to $_s s)"
    XL_OUT=$(timeout "$_s" xl "$@" 2>&1)
    _xrc=$?
    [ -n "$XL_OUT" ] && printf '%s\n' "$XL_OUT" | sed 's/^/[xl] /'
    [ $_xrc -ne 0 ] && echo "[xl] (exit status $_xrc)"
    return $_xrc
}
timed_xl() { # SECS ARGS...: xl_bounded, wall time in XL_MS
    _t=$(now_ms); xl_bounded "$@"; _r=$?; XL_MS=$(( $(now_ms) - _t )); return $_r
}
_scenario_exit() {
    _rc=$?
    _pv_cleanup
    [ -n "$BALLASTD_PID" ] && ballastd_stop
    for _d in $OURS; do
        if xl domid "$_d" >/dev/null 2>&1; then
            log "cleanup: destroying $_d (domid $(domid "$_d")) left at exit"
            xl destroy "$_d" 2>&1 | sed 's/^/[xl] /'
            wait_gone "$_d" 20 || log "cleanup: $_d still listed: $(xl list 2>&1 | tr '\n' ' ')"
        fi
    done
    for _l in $LOOPS; do loop_bound "$_l" && disk_free "$_l"; done
    [ -n "$IMAGES" ] && rm -f $IMAGES
    (exit $_rc)
    _lab_exit
}
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; return 0; }
# DOM below is a domain name or a domid (a name is looked up at each call: after a migration or a
# restore it finds the new domain; a domid stays with the domain it was taken from).
_xs_dir() { if is_uint "$1"; then echo "/local/domain/$1"; else echo "/local/domain/$(domid "$1")"; fi; }
# xs_read DOM PATH: the one xenstore reader; prints the value, or xenstore-read's message and its
# status on failure
xs_read() { xenstore-read "$(_xs_dir "$1")/$2" 2>&1; }
xs_write() { xenstore-write "$(_xs_dir "$1")/$2" "$3" 2>&1; } # DOM PATH VALUE
_xs_is_uint() { _v=$(xs_read "$1" "$2"); is_uint "$_v"; }        # DOM PATH (last read in _v)
_xs_is() { _v=$(xs_read "$1" "$2"); [ "$_v" = "$3" ]; }          # DOM PATH VALUE (last read in _v)
xs_wait_uint() { # DOM PATH SECS: prints the number (or the last read)
    if wait_until "$3" _xs_is_uint "$1" "$2"; then echo "$_v"; return 0; fi
    echo "$_v"; return 1
}
xs_wait_eq() { # DOM PATH VALUE SECS: wait until PATH reads VALUE; prints the last read
    if wait_until "$4" _xs_is "$1" "$2" "$3"; then echo "$_v"; return 0; fi
    echo "$_v"; return 1
}
console_text() { tr -d '\r' <"$(console_log "$1")" 2>/dev/null; }
# done_figures: "Resumed total=..us frozen=..us before=..us after=..us" from a `suspend: done` line
done_figures() {
    sed -n 's/.*suspend: done: \([A-Za-z]*\), total \([0-9]*\) us, frozen \([0-9]*\) us, before hypercall \([0-9]*\) us, after \([0-9]*\) us.*/\1 total=\2us frozen=\3us before=\4us after=\5us/p'
}
# uptime_grows NAME DOMID: data/uptime increases over a 3 s dom0 sleep
uptime_grows() {
    _u1=$(xs_wait_uint "$2" data/uptime 10)
    sleep 3
    _u2=$(xs_wait_uint "$2" data/uptime 5)
    if is_uint "$_u1" && is_uint "$_u2" && [ "$_u2" -gt "$_u1" ]; then
        pass "$1" "domid $2 data/uptime $_u1 -> $_u2 over 3 s"
    else
        fail "$1" "domid $2 data/uptime '$_u1' then '$_u2' 3 s later"
    fi
}
# all_console_text DOM: every console log DOM wrote, before and after migrations
all_console_text() { cat "$CONSOLE_DIR/guest-$1.log" "$CONSOLE_DIR/guest-$1--"*.log 2>/dev/null | tr -d '\r'; }
# damage_lines DOM: PATTERN ERROR / MISMATCH / panic / self-test error lines in DOM's console logs
damage_lines() { all_console_text "$1" | grep -E 'PATTERN ERROR|MISMATCH|panicked|ERROR.*selftest'; }
# no_damage NAME DOM: no PATTERN ERROR / MISMATCH / panic anywhere in DOM's console logs
no_damage() {
    _bad=$(damage_lines "$2" | head -n 3)
    if [ -n "$_bad" ]; then fail "$1" "$2 console: $_bad"
    else pass "$1" "$2 console ($(all_console_text "$2" | wc -l) lines) has no PATTERN ERROR, MISMATCH or panic"; fi
}
# pattern_ok NAME DOM [SECS]: the one check that DOM's self-test memory pattern is intact: a fresh
# "selftest: pattern ... verified, ..., errors 0" line since DOM's mark (within SECS, default 15),
# no damage line (damage_lines) in DOM's console logs, and data/selftest/pattern_errors reading 0
PATTERN_OK_RE='selftest: pattern [0-9]+ MiB verified, pass [0-9]+, errors 0'
pattern_ok() {
    _pt0=$(now_ms)
    if _pl=$(wait_console "$2" "$PATTERN_OK_RE" "${3:-15}"); then
        _pl="$_pl (after $(( $(now_ms) - _pt0 )) ms)"; _pfresh=yes
    else
        _pl="no console line matching /$PATTERN_OK_RE/ from $2 within ${3:-15} s; console tail: $(_console_since_mark "$2" | tail -n 5 | _oneline)"
        _pfresh=no
    fi
    _pbad=$(damage_lines "$2" | head -n 1)
    _perrs=$(xs_wait_eq "$2" data/selftest/pattern_errors 0 5)
    if [ $_pfresh = yes ] && [ -z "$_pbad" ] && [ "$_perrs" = 0 ]; then
        pass "$1" "$_pl; pattern_errors=0, passes=$(xs_read "$2" data/selftest/pattern_passes)"; return 0
    fi
    fail "$1" "${_pbad:+$_pbad; }pattern_errors='$_perrs'; $_pl"; return 1
}
# running NAME DOM: DOM listed as r or b
running() {
    if _st=$(wait_state "$2" rb 5); then pass "$1" "xl list: $2 (domid $(domid "$2")) state $_st"
    else fail "$1" "$2 state '$_st', expected r or b; $(xl list 2>&1 | tr '\n' ' ')"; fi
}

# ---- helpers for migration scenarios --------------------------------------------
# `xl migrate -s CMD DOM localhost` runs `CMD localhost xl migrate-receive`: LAB_SSH stands in
# for ssh by dropping the host and running the rest here.
LAB_SSH=/tmp/lab-ssh
_lab_ssh() {
    [ -x "$LAB_SSH" ] && return 0
    printf '#!/bin/sh\nshift\nexec sh -c "$*"\n' >"$LAB_SSH" && chmod +x "$LAB_SSH"
}
# migrate DOM SECS [XL_OPTS...]: live-migrates DOM to localhost; wall time in XL_MS, status
# returned. Afterwards DOM's console is the receiving domain's log, marked where it stood before
# the migration; if the migration failed, the sender's log and the caller's mark stay.
# `sender_console DOM` prints what the sender said meanwhile.
migrate() {
    _lab_ssh
    _md=$1 _ms=$2; shift 2
    _alias=$LAB_TMP/alias-$_md _mark=$LAB_TMP/marks/$_md
    rm -f "$_alias.prev" "$_mark.prev"
    [ -f "$_alias" ] && cp "$_alias" "$_alias.prev"
    [ -f "$_mark" ] && cp "$_mark" "$_mark.prev"
    _sf=$(console_log "$_md")
    echo "$_sf $([ -f "$_sf" ] && wc -c <"$_sf" | tr -d ' ' || echo 0)" >"$LAB_TMP/sender-$_md"
    echo "$_md--incoming" >"$_alias"
    console_mark "$_md"
    if timed_xl "$_ms" migrate "$@" -s "$LAB_SSH" "$_md" localhost; then return 0; fi
    _r=$_xrc
    rm -f "$_alias" "$_mark"
    [ -f "$_alias.prev" ] && mv "$_alias.prev" "$_alias"
    [ -f "$_mark.prev" ] && mv "$_mark.prev" "$_mark"
    return $_r
}
# sender_console DOM: what the sending domain printed from the start of the last `migrate DOM`
# (its log and size then are in $LAB_TMP/sender-DOM)
sender_console() {
    read -r _sl _so <"$LAB_TMP/sender-$1" || return 0
    [ -f "$_sl" ] && tail -c +$((_so + 1)) "$_sl" | tr -d '\r'
}
# expect_migrated NAME DOM OLD_ID: DOM runs under a new domid, the sender's and receiver's
# temporary names are gone, and the guest reports a resume in a new domain since the last mark
expect_migrated() {
    _id=$(domid "$2")
    if ! is_uint "$_id" || [ "$_id" = "$3" ]; then
        fail "$1" "$2 domid '$_id' after the migration (was $3): $(xl list 2>&1 | tr '\n' ' ')"; return 1
    fi
    for _t in "$2--incoming" "$2--migratedaway"; do
        if xl domid "$_t" >/dev/null 2>&1; then fail "$1" "$_t still listed: $(xl list 2>&1 | tr '\n' ' ')"; return 1; fi
    done
    if ! _l=$(wait_console "$2" 'suspend: done: Resumed' 30); then
        fail "$1" "domid $3 -> $_id but no 'suspend: done: Resumed'; console tail: $(_console_since_mark "$2" | tail -n 4 | _oneline)"
        return 1
    fi
    pass "$1" "domid $3 -> $_id; $(printf '%s\n' "$_l" | done_figures)"
}
# xl_kb_matches NAME DOM: what Xen holds for DOM (xl list) is what the guest accounts for
# (data/balloon/current_kb), within 1 MiB
xl_kb_matches() {
    _g=$(xs_read "$2" data/balloon/current_kb); _x=$(xl_mem_of "$2")
    if is_uint "$_g" && is_uint "$_x"; then
        _d=$(( _x - _g / 1024 )); [ $_d -lt 0 ] && _d=$(( -_d ))
        if [ $_d -le 1 ]; then pass "$1" "xl list $_x MiB, guest accounts for $_g KiB"; return 0; fi
    fi
    fail "$1" "xl list '$_x' MiB, guest accounts for '$_g' KiB"
    return 1
}
# balloon_to NAME DOM MIB [SECS]: xl mem-set DOM MIB, then `xl list` reaches MIB (within 1 MiB)
balloon_to() {
    xlc mem-set "$2" "${3}m" || { fail "$1" "xl mem-set $2 ${3}m -> rc=$_xrc $XL_OUT"; return 1; }
    expect_mem "$1" "$2" "$3" "${4:-20}"
}
# xen_log_clean NAME REGEX: Xen's console ring (xl dmesg, cleared by `xl dmesg -c` at the start of
# the scenario) has no line matching REGEX
xen_log_clean() {
    _hits=$(xl dmesg 2>&1 | grep -E -c -e "$2")
    if [ "$_hits" = 0 ]; then pass "$1" "xl dmesg: no line matches /$2/ ($(xl dmesg 2>&1 | wc -l) lines)"
    else fail "$1" "xl dmesg: $_hits lines match /$2/, first: $(xl dmesg 2>&1 | grep -E -m2 -e "$2" | _oneline)"; fi
}
# ---- several vCPUs
# vcpu_ticks DOM N: "t0 t1 ... tN-1", each vCPU's data/vcpu/<n>/ticks ('?' when unreadable)
vcpu_ticks() {
    _vt=""; _vi=0
    while [ "$_vi" -lt "$2" ]; do
        _vx=$(xs_read "$1" "data/vcpu/$_vi/ticks"); is_uint "$_vx" || _vx='?'
        _vt="$_vt $_vx"; _vi=$((_vi + 1))
    done
    echo "${_vt# }"
}
_all_advanced() { # BEFORE AFTER: every number in AFTER is greater than its place in BEFORE
    set -- $1 -- $2
    _n=0; for _x in "$@"; do [ "$_x" = -- ] && break; _n=$((_n + 1)); done
    _i=0
    while [ "$_i" -lt "$_n" ]; do
        eval "_b=\${$((_i + 1))}; _a=\${$((_i + _n + 2))}"
        is_uint "$_b" && is_uint "$_a" && [ "$_a" -gt "$_b" ] || return 1
        _i=$((_i + 1))
    done
}
# ticks_advance DOM N [VCPUS]: within 6 s every vCPU in VCPUS (default 0..N-1) advances its
# data/vcpu/<n>/ticks; the readings are left in _w (before) and _w2 (after)
ticks_advance() {
    _w=$(vcpu_ticks "$1" "$2"); _t0=$(now_ms)
    while [ $(( $(now_ms) - _t0 )) -lt 6000 ]; do
        sleep 1
        _w2=$(vcpu_ticks "$1" "$2")
        _b=""; _a=""
        for _v in ${3:-$(seq 0 $(( $2 - 1 )))}; do
            _b="$_b $(echo "$_w" | cut -d' ' -f$((_v + 1)))"; _a="$_a $(echo "$_w2" | cut -d' ' -f$((_v + 1)))"
        done
        _all_advanced "$_b" "$_a" && return 0
        # A figure not readable yet (a restored domain's xenstore has none until
        # the guest publishes again): measure from the first reading that has it.
        case "$_w" in *'?'*) _w=$_w2 ;; esac
    done
    return 1
}
# vcpus_tick NAME DOM N [VCPUS]: ticks_advance as a result
vcpus_tick() {
    if ticks_advance "$2" "$3" "${4:-}"; then pass "$1" "ticks of vCPUs ${4:-0..$(( $3 - 1 ))}: [$_w] -> [$_w2]"
    else fail "$1" "ticks of vCPUs ${4:-0..$(( $3 - 1 ))} did not all advance in 6 s: [$_w] -> [$_w2]"; fi
}
# smp_ok NAME DOM: with VCPUS > 1 (the smp-* wrappers set it), every vCPU of DOM ticks
smp_ok() { [ "${VCPUS:-1}" -gt 1 ] || return 0; vcpus_tick "$1" "$(domid "$2")" "$VCPUS"; }
# VCPUS_CFG: the xl create key the smp-* wrappers add (empty for one vCPU)
VCPUS_CFG=
[ "${VCPUS:-1}" -gt 1 ] && VCPUS_CFG="vcpus=$VCPUS"
# vcpu_list_count DOM: vCPUs `xl vcpu-list` shows for DOM (any state)
vcpu_list_count() { xl vcpu-list "$1" 2>/dev/null | awk -v d="$1" '$1 == d' | wc -l | tr -d ' '; }
# vcpus_online_count DOM: vCPUs `xl vcpu-list` shows running or blocked (not offline)
vcpus_online_count() { xl vcpu-list "$1" 2>/dev/null | awk -v d="$1" '$1 == d && $5 !~ /p/' | wc -l | tr -d ' '; }
# ---- helpers for ballastd scenarios -------------------------------------------
# ballastd_start [ARGS...]: `ballastd run ARGS` in the background, logging to $BALLASTD_LOG; waits
# for its first status. ballastd_stop prints its log as "[ballastd] " lines (_scenario_exit does it
# too). ballastd_alive: the daemon is still running.
BALLASTD_LOG=/tmp/ballastd.log
BALLASTD_PID=
ballastd_start() {
    /lab/ballastd run "$@" >"$BALLASTD_LOG" 2>&1 &
    BALLASTD_PID=$!
    if wait_until 15 xenstore-read /tool/ballastd/status >/dev/null 2>&1; then
        pass ballastd-up "ballastd $* running (pid $BALLASTD_PID): $(xenstore-read /tool/ballastd/status)"
    else
        fail ballastd-up "no /tool/ballastd/status within 15 s; log: $(tail -n 5 "$BALLASTD_LOG" | _oneline)"
    fi
}
ballastd_alive() { [ -n "$BALLASTD_PID" ] && kill -0 "$BALLASTD_PID" 2>/dev/null; }
ballastd_stop() {
    [ -n "$BALLASTD_PID" ] || return 0
    kill "$BALLASTD_PID" 2>/dev/null; wait "$BALLASTD_PID" 2>/dev/null
    BALLASTD_PID=
    sed 's/^/[ballastd] /' "$BALLASTD_LOG"
    xenstore-rm /tool/ballastd 2>/dev/null
}
# ballastd_said REGEX: a line of the daemon's log matching REGEX (printed); 1 if none
ballastd_said() { grep -E -m1 -e "$1" "$BALLASTD_LOG"; }
# target_mib DOM: DOM's memory/target in MiB
target_mib() { _t=$(xs_read "$1" memory/target); is_uint "$_t" && echo $(( _t / 1024 )); }
# host_free_mib: free memory in Xen (xl info)
host_free_mib() { xl info 2>/dev/null | awk '$1 == "free_memory" { print $3 }'; }
# ballast_guest NAME MEM MAXMEM [CMDLINE]: xl create a ballast guest called NAME (check create-NAME)
# and wait until its balloon runs (check up-NAME)
ballast_guest() {
    expect_xl "create-$1" create /lab/ballast.cfg "name=\"$1\"" "memory=$2" "maxmem=$3" "extra=\"${4:-}\"" || return 1
    expect_console "up-$1" "$1" 'balloon: (static-max|off)' 60
}
# targets_settled SLACK_MIB DOM...: every DOM's `xl list` size is within SLACK_MIB of its
# memory/target (the daemon's targets have been met); the sizes are left in $SIZES
targets_settled() {
    _sl=$1; shift; SIZES=
    for _d in "$@"; do
        _t=$(target_mib "$_d"); _m=$(xl_mem_of "$_d")
        is_uint "$_t" && is_uint "$_m" || return 1
        SIZES="$SIZES $_d=${_m}/${_t}"
        _dd=$(( _m - _t )); [ $_dd -lt 0 ] && _dd=$(( -_dd ))
        [ $_dd -le "$_sl" ] || return 1
    done
}

# ---- helpers for ballast's own PV devices -----------------------------------------
# (blkfront's self-test publishes data/blk/<vdev>/*, netfront data/net/<n>/*)
#   _xs_uint_above DOM PATH MIN    PATH is a number above MIN (last read in _v)
#   blk_figures DOM VDEV           the self-test's figures in one line
#   blk_clean NAME DOM VDEV        passes > 0 and mismatches, duplicates, errors all 0
#   disk_sectors_ok NAME IMAGE N   the first N sectors of IMAGE each hold the self-test's line naming
#                                  themselves ("ballast-blk sector=S gen=G"), zero-filled after
#   ping_log_start ADDR            dom0 pings ADDR 10 times a second in the background, each reply
#                                  stamped with dom0's uptime, into $PING_LOG (stopped at exit)
#   ping_log_answer_after MS SECS  wait until a reply stamped after MS (now_ms time) is logged
#   ping_log_since START END       "AFTER LOST GAP": ms from END to the first reply after it, requests
#                                  sent after the last reply before START never answered, and the
#                                  longest time without a reply from then until that first reply
#   tcp_open ADDR                  a TCP connection to ADDR's echo port held open by nc (fifo in, $TCP_OUT out)
#   tcp_says NAME                  a line through the held connection comes back
_xs_uint_above() { _v=$(xs_read "$1" "$2"); is_uint "$_v" && [ "$_v" -gt "$3" ]; }
blk_figures() {
    for _n in state passes requests reissued mismatches duplicates errors in_flight read_bytes written_bytes flushes; do
        printf '%s=%s ' "$_n" "$(xs_read "$1" "data/blk/$2/$_n")"
    done
}
blk_clean() {
    _bf=$(blk_figures "$2" "$3")
    case " $_bf" in
    *" passes=0 "* | *" passes= "*) fail "$1" "no self-test pass: $_bf"; return 1 ;;
    esac
    for _n in mismatches duplicates errors; do
        case " $_bf" in *" $_n=0 "*) ;; *) fail "$1" "$_n: $_bf"; return 1 ;; esac
    done
    pass "$1" "$_bf"
}
disk_sectors_ok() {
    _ds=$(dd if="$2" bs=512 count="$3" 2>/dev/null | tr -d '\000' | awk -v n="$3" '
        { ok = ($0 ~ /^ballast-blk sector=[0-9]+ gen=[0-9]+$/) && ($2 == "sector=" (NR - 1))
          if (!ok) { bad++; if (bad <= 3) first = first " [line " NR ": " substr($0, 1, 60) "]" }
          split($3, g, "="); gens[g[2]]++ }
        END { if (NR != n) { bad++; first = first " [" NR " lines, want " n "]" }
              for (k in gens) gl = gl " gen" k "=" gens[k]
              printf "%d%s |%s\n", bad, first, gl }')
    case $_ds in
    "0 |"*) pass "$1" "$3 sectors of $2 each name themselves:${_ds#0 |}" ;;
    *) fail "$1" "$2: ${_ds%%|*} bad; ${_ds#*|}" ;;
    esac
}
PING_LOG=
ping_log_start() {
    PING_LOG=$LAB_TMP/ping-log
    : >"$PING_LOG"
    ping -i 0.1 "$1" 2>&1 | while read -r _pl; do read -r _up _ </proc/uptime; echo "$_up $_pl"; done >>"$PING_LOG" &
    PING_PID=$!
}
_pv_cleanup() {
    [ -n "$PING_LOG" ] && killall ping 2>/dev/null
    [ -n "$TCP_FIFO" ] && { exec 7>&-; killall nc 2>/dev/null; }
    return 0
}
# the newest reply's dom0 time in ms
_ping_last_ms() { awk '/bytes from/ { t = $1 } END { printf "%d\n", t * 1000 }' "$PING_LOG"; }
_ping_after() { [ "$(_ping_last_ms)" -gt "$1" ]; }
ping_log_answer_after() { wait_until "$2" _ping_after "$1"; }
ping_log_since() {
    awk -v s="$1" -v e="$2" '
        /bytes from/ { t = $1 * 1000; match($0, /seq=[0-9]+/); q = substr($0, RSTART + 4, RLENGTH - 4) + 0
            seen[q] = 1
            if (t <= s) { lq = q; lt = t; pt = t; next }
            if (ft != "") next
            if (pt != "" && t - pt > gap) gap = t - pt
            pt = t
            if (t > e) { ft = t; fq = q } }
        END { lost = 0
              for (k = lq + 1; k < fq; k++) if (!(k in seen)) lost++
              after = ft - e; if (after < 0) after = 0
              printf "%d %d %d\n", after, lost, gap }' "$PING_LOG"
}
TCP_FIFO= TCP_OUT=
tcp_open() {
    TCP_FIFO=$LAB_TMP/tcp-in TCP_OUT=$LAB_TMP/tcp-out
    rm -f "$TCP_FIFO"; mkfifo "$TCP_FIFO"; : >"$TCP_OUT"
    nc "$1" 7 <"$TCP_FIFO" >"$TCP_OUT" 2>&1 &
    exec 7>"$TCP_FIFO"
    echo "held-open-0" >&7
}
_tcp_has() { grep -q "^$1\$" "$TCP_OUT"; }
tcp_says() {
    _tl="held-open-$1"
    echo "$_tl" >&7
    if wait_until 10 _tcp_has "$_tl"; then pass "tcp-$1" "the held connection echoed '$_tl'"; return 0; fi
    fail "tcp-$1" "the held connection did not echo '$_tl': $(_oneline <"$TCP_OUT")"; return 1
}
