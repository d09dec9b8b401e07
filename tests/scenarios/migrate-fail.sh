#!/bin/sh
# Migrations whose receiver cannot be created leave the guest running at the sender, intact, and
# the next migration works: first a name clash (a domain already called ballast--incoming), then
# a host without enough free memory (a filler domain takes it), then a receiver that dies after
# the guest suspended (the sender cancels the suspend).
# needs: ballast
# timeout: 480
. /lab/lib.sh

OURS="ballast ballast--incoming ballast--migratedaway filler"
export CUT_SENDER= CUT_DONE= CUT_AT=
IMAGES=
trap _scenario_exit EXIT

# after_failure N ID [suspended]: the migration failed and the guest runs on at the sender,
# unharmed. A guest that was asked to suspend (always so with "suspended") must have cancelled
# the suspend; one that was not has nothing to cancel, and nothing is checked then.
after_failure() {
    if [ "$(domid ballast)" = "$2" ]; then pass "same-domain-$1" "ballast still domid $2"
    else fail "same-domain-$1" "ballast domid '$(domid ballast)', was $2: $(xl list 2>&1 | tr '\n' ' ')"; fi
    running "running-$1" ballast
    if xl domid ballast--migratedaway >/dev/null 2>&1; then fail "no-leftover-$1" "ballast--migratedaway listed"
    else pass "no-leftover-$1" "no ballast--migratedaway"; fi
    if [ "$3" = suspended ] || _console_since_mark ballast | grep -q 'control: suspend requested'; then
        expect_console "cancelled-$1" ballast 'suspend: done: Cancelled' 30
    else
        log "cancelled-$1 not checked: the guest was not asked to suspend before the receiver failed"
    fi
    console_mark ballast
    pattern_ok "pattern-$1" ballast 40
    uptime_grows "uptime-$1" "$2"
}

expect_xl create create /lab/ballast.cfg || exit 1
expect_console ready ballast 'control: watching control/shutdown' 40 || exit 1
pattern_ok pattern-before ballast 30

# 1. name clash on the receiving side
expect_xl create-clash create /lab/ballast.cfg 'name="ballast--incoming"' 'memory=16' 'maxmem=16' \
    'extra="ballast.pattern=0 ballast.aspace=0"' || exit 1
id=$(domid ballast)
console_mark ballast
if migrate ballast 90; then fail migrate-clash "xl migrate succeeded although ballast--incoming exists"; exit 1
else pass migrate-clash "xl migrate failed as it must (rc=$_xrc after $XL_MS ms): $(printf '%s\n' "$XL_OUT" | grep -i -m1 'exist\|fail\|error')"; fi
after_failure 1 "$id"
xlc destroy ballast--incoming; wait_gone ballast--incoming 20

# 2. not enough free memory for the receiver
free=$(xl info | awk '/^free_memory/ {print $3}')
fill=$(( free - 160 ))
log "host free memory ${free} MiB: a filler of ${fill} MiB leaves $(( free - fill )) MiB for a 256 MiB receiver"
expect_xl create-filler create /lab/ballast.cfg 'name="filler"' "memory=$fill" "maxmem=$fill" \
    'extra="ballast.pattern=0 ballast.aspace=0 ballast.sleepers=0"' || exit 1
expect_console filler-ready filler 'control: watching control/shutdown' 60
id=$(domid ballast)
console_mark ballast
if migrate ballast 120; then fail migrate-no-memory "xl migrate succeeded with $(xl info | awk '/^free_memory/ {print $3}') MiB free"; exit 1
else pass migrate-no-memory "xl migrate failed as it must (rc=$_xrc after $XL_MS ms): $(printf '%s\n' "$XL_OUT" | grep -i -m1 'memory\|fail\|error')"; fi
after_failure 2 "$id"
xlc destroy filler; wait_gone filler 20
if xl domid ballast--incoming >/dev/null 2>&1; then
    fail receiver-cleaned "ballast--incoming left after the failed migration: $(xl list 2>&1 | tr '\n' ' ')"
    xlc destroy ballast--incoming
else pass receiver-cleaned "no ballast--incoming left"; fi

# 3. the receiver dies after the guest has suspended: the sender resumes it (a cancelled suspend)
# and the guest runs on in the same domain. The stand-in for ssh kills the receiving xl and its
# restore helper once the sender's console shows the last line before the suspend hypercall.
cut_ssh=/tmp/lab-ssh-cut cut_done=$LAB_TMP/cut-done
cat >"$cut_ssh" <<'CUT'
#!/bin/sh
shift
# an asynchronous command's stdin would be /dev/null: hand it the stream through fd 3
exec 3<&0
sh -c "exec $*" <&3 3<&- &
rx=$!
exec 0<&- 3<&-
# the sender's console log and its size when the migration started, as `migrate` recorded them
read -r log from <"$CUT_SENDER"
(
    while kill -0 $rx 2>/dev/null; do
        if tail -c +$((from + 1)) "$log" | tr -d '\r' | grep -qE "$CUT_AT"; then
            kill -9 $rx
            for p in /proc/[0-9]*; do
                tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -e '--restore-domain' && kill -9 "${p#/proc/}"
            done
            echo "receiver killed" >"$CUT_DONE"; exit 0
        fi
        sleep 0.05
    done
) &
wait $rx
CUT
chmod +x "$cut_ssh"
id=$(domid ballast)
console_mark ballast
rm -f "$cut_done"
CUT_SENDER=$LAB_TMP/sender-ballast CUT_DONE=$cut_done
CUT_AT='suspend: (released [0-9]+ free pages|releasing free memory is switched off)'
export CUT_SENDER CUT_DONE CUT_AT
# a target change in flight as well: the guest starts down to 160 MiB as the migration starts
xlc mem-set ballast 160m
LAB_SSH=$cut_ssh
if migrate ballast 120; then fail migrate-cut "xl migrate succeeded although its receiver was killed"
else pass migrate-cut "xl migrate failed as it must (rc=$_xrc after $XL_MS ms): $(printf '%s\n' "$XL_OUT" | grep -m1 'resum')"; fi
LAB_SSH=/tmp/lab-ssh
if [ -f "$cut_done" ]; then pass receiver-killed "the receiver was killed after the guest's last line before suspending"
else fail receiver-killed "the stand-in never saw the guest suspend: $(printf '%s\n' "$XL_OUT" | tail -n 3 | _oneline)"; fi
if xl domid ballast--incoming >/dev/null 2>&1; then xlc destroy ballast--incoming; wait_gone ballast--incoming 20; fi
expect_console cut-suspended ballast "$CUT_AT" 5
after_failure 3 "$id" suspended
expect_mem at-160 ballast 160 30
xl_kb_matches accounted-160 ballast

# 4. the next migration, with the guest growing back to 256 MiB as it starts, works, and the guest
# answers its suspend request at once (not after libxl's 60 s acknowledgement timeout)
id=$(domid ballast)
console_mark ballast
xlc mem-set ballast 256m
if migrate ballast 120; then pass migrate-next "xl migrate in $XL_MS ms"
else fail migrate-next "xl migrate rc=$_xrc after $XL_MS ms: $(printf '%s\n' "$XL_OUT" | tail -n 3)"; exit 1; fi
if printf '%s\n' "$XL_OUT" | grep -qi "didn't acknowledge\|timed out\|did not suspend"; then
    fail answered-next "xl waited for the guest: $(printf '%s\n' "$XL_OUT" | grep -i -m1 "didn't acknowledge\|timed out\|did not suspend")"
elif _l=$(sender_console ballast | grep -m1 'control: suspend requested'); then
    pass answered-next "$_l"
else fail answered-next "the sender's console has no 'control: suspend requested' line"; fi
expect_migrated resumed-next ballast "$id" || exit 1
console_mark ballast
pattern_ok pattern-next ballast 40
expect_mem at-target ballast 256 20
xl_kb_matches accounted ballast
no_damage no-damage ballast
expect_xl destroy destroy ballast
