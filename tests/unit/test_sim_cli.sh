#!/bin/sh
# kadet-sim's command line on the tiny traces in tests/data/sched: the summary JSON has
# the documented keys, training saves a table that evaluation then loads, and bad input
# gives a non-zero exit with a message instead of a crash.
set -eu
SIM="${KADET_BIN_DIR:?}/kadet-sim"
DATA="${KADET_SOURCE_DIR:?}/tests/data/sched"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$SIM" --workload "$DATA/workload-toy.csv" --traces "$DATA/traces" --nodes 2 \
    --policy greedy --summary-json "$TMP/one.json" --jobs-csv "$TMP/jobs.csv" >"$TMP/out" \
    || fail "greedy run"
for k in avg_jct p50_jct p99_jct makespan utilization rescales; do
    grep -q "\"$k\"" "$TMP/one.json" || fail "summary lacks $k"
done
[ "$(wc -l <"$TMP/jobs.csv")" -eq 8 ] || fail "jobs csv should hold a header and 7 jobs"
grep -q '^greedy ' "$TMP/out" || fail "no table row"

"$SIM" --traces "$DATA/traces" --nodes 2 --train 3 --quiet \
    --train-workloads "$DATA/workload-toy.csv,$DATA/workload-toy.csv" \
    --qtable "$TMP/q.json" || fail "training"
grep -q '"kadet-qtable"' "$TMP/q.json" || fail "saved table format"
"$SIM" --workload "$DATA/workload-toy.csv" --traces "$DATA/traces" --nodes 2 \
    --policy static,tiresias,fair,greedy,rl --qtable "$TMP/q.json" \
    --summary-json "$TMP/all.json" >"$TMP/out" 2>"$TMP/err" || fail "all policies"
grep -q warning "$TMP/err" && fail "trained table not loaded: $(cat "$TMP/err")"
for p in static tiresias fair greedy rl; do
    grep -q "\"$p\"" "$TMP/all.json" || fail "summary lacks $p"
done

# the difference reward's baseline: none trains too, an unknown policy is a usage error
"$SIM" --traces "$DATA/traces" --nodes 2 --train 2 --quiet --train-baseline none \
    --train-workloads "$DATA/workload-toy.csv" --qtable "$TMP/q0.json" || fail "training, no baseline"
grep -q '"version": *3' "$TMP/q0.json" || fail "saved table version"
if "$SIM" --traces "$DATA/traces" --nodes 2 --train 2 --quiet --train-baseline fifo \
    --train-workloads "$DATA/workload-toy.csv" --qtable "$TMP/q1.json" 2>"$TMP/err"; then
    fail "unknown baseline accepted"
fi
grep -q "train-baseline" "$TMP/err" || fail "baseline message: $(cat "$TMP/err")"

# the goodput model and tiresias thresholds
"$SIM" --workload "$DATA/workload-toy.csv" --traces "$DATA/traces" --nodes 2 \
    --policy tiresias,greedy --batch-model goodput --tiresias-thresholds 0.5,2 \
    --summary-json "$TMP/gp.json" >"$TMP/out" || fail "goodput run"
grep -q "goodput batch model" "$TMP/out" || fail "goodput banner"
grep -q '"greedy"' "$TMP/gp.json" || fail "goodput summary"
for bad in "--batch-model elastic" "--tiresias-thresholds 10,1" "--tiresias-thresholds x" \
           "--tiresias-thresholds ,"; do
    # shellcheck disable=SC2086
    if "$SIM" --workload "$DATA/workload-toy.csv" --traces "$DATA/traces" $bad \
        >/dev/null 2>"$TMP/err"; then
        fail "accepted $bad"
    fi
    [ -s "$TMP/err" ] || fail "no message for $bad"
done

printf 'not json' >"$TMP/bad.json"
"$SIM" --workload "$DATA/workload-toy.csv" --traces "$DATA/traces" --nodes 2 \
    --policy rl --qtable "$TMP/bad.json" >"$TMP/out" 2>"$TMP/err" || fail "corrupt table run"
grep -q "falls back to greedy" "$TMP/err" || fail "no fallback warning"

if "$SIM" --workload "$DATA/bad/number.csv" --traces "$DATA/traces" 2>"$TMP/err"; then
    fail "bad workload accepted"
fi
grep -q "number.csv:2" "$TMP/err" || fail "bad workload message: $(cat "$TMP/err")"
if "$SIM" --workload "$DATA/workload-toy.csv" --nodes zero 2>"$TMP/err"; then
    fail "bad option accepted"
fi
if "$SIM" --workload "$DATA/workload-toy.csv" --traces "$DATA/traces" --policy optimus \
    2>"$TMP/err"; then
    fail "unknown policy accepted"
fi
grep -q "unknown policy" "$TMP/err" || fail "unknown policy message"
# the common command line: --help and --version exit 0, --opt=value, errors name the
# option and its range, the help names the traces' variable and no built-in path
"$SIM" --help >"$TMP/help" || fail "--help exit status"
grep -q KADET_POLLUX_DIR "$TMP/help" || fail "help does not name KADET_POLLUX_DIR"
grep -q KADET_QTABLE "$TMP/help" || fail "help does not name KADET_QTABLE"
grep -q -- "--tiresias-thresholds H" "$TMP/help" || fail "help lacks a named metavariable"
grep -q "$KADET_SOURCE_DIR" "$TMP/help" && fail "help shows a path baked in at build time"
"$SIM" -h >/dev/null || fail "-h exit status"
"$SIM" --version >"$TMP/out" || fail "--version exit status"
grep -q '^kadet-sim ' "$TMP/out" || fail "--version output: $(cat "$TMP/out")"
"$SIM" --workload="$DATA/workload-toy.csv" --traces="$DATA/traces" --nodes=2 \
    --policy=greedy --quiet >"$TMP/out" || fail "--opt=value"
grep -q '^greedy ' "$TMP/out" || fail "no table row with --opt=value"
set +e
"$SIM" --workload "$DATA/workload-toy.csv" --nodes=0 2>"$TMP/err"; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "out-of-range value exit $rc"
grep -q -- "--nodes: 0 is outside 1..10000" "$TMP/err" || fail "range message: $(cat "$TMP/err")"
if "$SIM" --workload "$DATA/workload-toy.csv" --nodse 2 2>"$TMP/err"; then
    fail "misspelt option accepted"
fi
grep -q "did you mean --nodes" "$TMP/err" || fail "no suggestion: $(cat "$TMP/err")"

# relative paths, and the traces found beside the workload's folder (the artifact layout)
mkdir -p "$TMP/p/workloads" "$TMP/run"
cp "$DATA/workload-toy.csv" "$TMP/p/workloads/w.csv"
ln -s "$DATA/traces" "$TMP/p/traces"
(cd "$TMP/run" && env -u KADET_POLLUX_DIR "$SIM" --workload ../p/workloads/w.csv --nodes 2 \
    --policy greedy --quiet >"$TMP/out") || fail "relative workload with traces beside it"
grep -q '^greedy ' "$TMP/out" || fail "no table row for the relative workload"
rm "$TMP/p/traces"
if (cd "$TMP/run" && env -u KADET_POLLUX_DIR "$SIM" --workload ../p/workloads/w.csv \
    2>"$TMP/err"); then
    fail "ran without traces"
fi
grep -q "KADET_POLLUX_DIR" "$TMP/err" || fail "no hint where traces come from: $(cat "$TMP/err")"
echo "kadet-sim cli: ok"
