#!/usr/bin/env bash
# The fuzz targets in fuzz/ (cargo-fuzz, nightly). One script for three uses:
#   run.sh check [RUNS]            make test: every target RUNS inputs (default 20000) on top of its
#                                  committed corpus; new inputs go to a scratch directory, not the repo
#   run.sh run SECONDS [TARGET...] make fuzz: each target for SECONDS, growing fuzz/corpus/<target>
#   run.sh count RUNS [TARGET...]  a campaign of exactly RUNS executions per target; prints one line
#                                  per target ("<target>: <n> runs, no crash") and keeps the logs in
#                                  build/fuzz/
#   run.sh tally                   the executions each target has had, summed from fuzz/campaign.tsv
# Every `run` and `count` appends one line per target to fuzz/campaign.tsv (date, target, runs,
# sanitizer, outcome): campaigns span sessions, each resuming from the corpus the last one grew.
# Targets over raw memory (the rings) run under AddressSanitizer; the others, safe Rust whose
# failures are panics and assertion errors, run without a sanitizer (about three times the speed)
# unless SANITIZER is set.
# A crash leaves its input in fuzz/artifacts/<target>/; once fixed it is copied into
# fuzz/corpus/<target>/ (so every later run replays it) and becomes a unit test in the crate.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/fuzz

setup() {
    if ! rustup toolchain list | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked --version 0.13.2
    fi
}

targets() {
    if [ $# -gt 0 ]; then echo "$@"; else (cd fuzz && cargo +nightly fuzz list | tr '\n' ' '); fi
}

sanitizer() {
    if [ -n "${SANITIZER:-}" ]; then echo "$SANITIZER"; return; fi
    case "$1" in
        *_ring) echo address ;;
        *) echo none ;;
    esac
}

# fuzz TARGET [libFuzzer args...]: one run, output in build/fuzz/[check-]TARGET.log; fails on a crash.
fuzz_one() {
    local t=$1
    shift
    mkdir -p "fuzz/corpus/$t"
    local san
    san=$(sanitizer "$t")
    # One target directory per sanitizer: their flags differ, so sharing one rebuilds everything.
    (cd fuzz && cargo +nightly fuzz run --sanitizer "$san" --target-dir "target/$san" "$t" "$@") >"build/fuzz/$LOG_PREFIX$t.log" 2>&1
}

# The number of inputs a finished run executed ("Done N runs" from -runs, "#N DONE" otherwise).
runs_done() {
    grep -Eo '^Done [0-9]+ runs|^#[0-9]+[[:space:]]+DONE' "build/fuzz/$LOG_PREFIX$1.log" | tail -n 1 | grep -Eo '[0-9]+'
}

report() {
    local t=$1 rc=$2
    if [ "$rc" -ne 0 ]; then
        echo "FAIL fuzz $t (exit $rc); the log ends:"
        tail -n 30 "build/fuzz/$LOG_PREFIX$t.log"
        return 1
    fi
    echo "fuzz $t: $(runs_done "$t") runs, no crash"
}

# ledger TARGET RC: one line in fuzz/campaign.tsv for a campaign's run of TARGET. A crashed run
# counts the executions its log reached.
ledger() {
    local t=$1 rc=$2 n outcome=ok
    n=$(runs_done "$t" || true)
    if [ "$rc" -ne 0 ] || [ -z "$n" ]; then
        outcome=crash
        n=$(grep -Eo '^#[0-9]+' "build/fuzz/$LOG_PREFIX$t.log" | tail -n 1 | tr -d '#' || true)
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$t" "${n:-0}" "$(sanitizer "$t")" "$outcome" >>fuzz/campaign.tsv
}

# campaign TARGET [libFuzzer args...]: one run of a campaign, written in the ledger and reported.
campaign() {
    local t=$1 rc=0
    shift
    fuzz_one "$t" "$@" || rc=$?
    ledger "$t" "$rc"
    report "$t" "$rc"
}

mode=${1:-check}
# A check's logs are named apart, so that it can run beside a campaign.
LOG_PREFIX=
[ "$mode" = check ] && LOG_PREFIX=check-
shift || true
[ "$mode" = tally ] || setup
failed=0
case "$mode" in
    check)
        runs=${1:-20000}
        for san in none address; do
            (cd fuzz && cargo +nightly fuzz build --sanitizer $san --target-dir target/$san) >build/fuzz/build.log 2>&1 || {
                echo "FAIL fuzz build (sanitizer $san)"; tail -n 30 build/fuzz/build.log; exit 1; }
        done
        for t in $(targets); do
            scratch=$(mktemp -d)
            rc=0
            fuzz_one "$t" "$scratch" "$PWD/fuzz/corpus/$t" -- -runs="$runs" || rc=$?
            rm -rf "$scratch"
            report "$t" "$rc" || failed=1
        done
        ;;
    run)
        secs=${1:?usage: run.sh run SECONDS [TARGET...]}
        shift
        for t in $(targets "$@"); do
            campaign "$t" -- -max_total_time="$secs" || failed=1
        done
        ;;
    count)
        runs=${1:?usage: run.sh count RUNS [TARGET...]}
        shift
        for t in $(targets "$@"); do
            start=$(date +%s)
            campaign "$t" -- -runs="$runs" || failed=1
            echo "  ($(( $(date +%s) - start )) s, sanitizer $(sanitizer "$t"))"
        done
        ;;
    tally)
        # Runs since the last crash of each target: a crash restarts its count (the fix changes
        # the code under test).
        awk -F'\t' '$5 == "crash" { n[$2] = 0; c[$2]++; next } { n[$2] += $3 }
            END { for (t in n) printf "%-18s %12d runs since its last crash (%d crash(es) before)\n", t, n[t], c[t] }' \
            fuzz/campaign.tsv | sort
        exit 0
        ;;
    *)
        echo "usage: run.sh check [RUNS] | run SECONDS [TARGET...] | count RUNS [TARGET...] | tally" >&2
        exit 2
        ;;
esac
exit "$failed"
