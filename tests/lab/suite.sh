#!/usr/bin/env bash
# The lab part of `make test`: every scenario, grouped so that related
# checks share one Xen boot (each boot costs ~30 s under TCG). Prints each
# boot's results, then one total line "N passed, N failed"; exits non-zero
# if anything failed or a boot did not report.
set -u
cd "$(dirname "$0")/../.."
RUN="python3 tests/lab/run.py ${RUNFLAGS:-}"
mkdir -p build/lab

# One line per boot: run.py options and scenarios.
GROUPS_FILE=$(mktemp)
cat >"$GROUPS_FILE" <<'GROUPS'
core|boot crash shutdown xenstore tasks badinput hostile-dom0
suspend|save-restore checkpoint unpinned refuse cycles
migrate|migrate migrate-balloon migrate-busy migrate-fail
xhost-1|--disk build/lab/xhost.img cross-host-save
xhost-2|--disk build/lab/xhost.img --dom0-mem 1024M cross-host-restore
balloon|mem-set mem-set-storm balloon-badinput balloon-suspend
images|small-image small-checkpoint busy-image release-off
smp|smp smp-hotplug smp-refuse smp-checkpoint smp-cycles smp-migrate
xhost4-1|--disk build/lab/xhost.img smp-cross-host-save
xhost4-2|--disk build/lab/xhost.img --dom0-mem 1024M smp-cross-host-restore
ballastd|squeeze uncooperative hog ballastd-suspend
pv|pv-linux pv-ballast pv-cycles smp-pv-cycles
xhostpv-1|--disk build/lab/xhost.img pv-cross-host-save
xhostpv-2|--disk build/lab/xhost.img --dom0-mem 1024M pv-cross-host-restore
GROUPS

total_pass=0
total_fail=0
# Every failed check with its boot, repeated at the end: CI keeps only the
# tail of the output.
FAILS=$(mktemp)
while IFS='|' read -r name args; do
    # Skip scenarios whose files do not exist yet (listed for the record).
    set -- $args
    keep=()
    scen=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --*) keep+=("$1" "$2"); shift 2 ;;
            *) if [ -f "tests/scenarios/$1.sh" ]; then keep+=("$1"); scen=1; else echo "suite: no scenario $1, skipped"; fi; shift ;;
        esac
    done
    [ "$scen" = 1 ] || continue
    # Each cross-host pair starts from a fresh disk.
    case "$name" in xhost-1 | xhost4-1 | xhostpv-1) rm -f build/lab/xhost.img; truncate -s 320M build/lab/xhost.img ;; esac
    echo "=== suite: boot '$name': ${keep[*]}"
    out=$(mktemp)
    $RUN "${keep[@]}" </dev/null 2>&1 | tee "$out"
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
    if [ -z "$last" ]; then
        echo "suite: boot '$name' reported no summary"
        total_fail=$((total_fail + 1))
    else
        p=${last%% passed*}; f=${last#*, }; f=${f%% failed*}
        total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    fi
    grep -E '^(FAIL |lab: )' "$out" | grep -E '^FAIL |TIMEOUT' | sed "s|^|  [$name] |" >>"$FAILS"
    rm -f "$out"
done <"$GROUPS_FILE"
rm -f "$GROUPS_FILE" build/lab/xhost.img
echo "=== suite: all lab boots done"
if [ -s "$FAILS" ]; then
    echo "=== suite: what failed"
    cat "$FAILS"
fi
rm -f "$FAILS"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
