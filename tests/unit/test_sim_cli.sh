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
echo "kadet-sim cli: ok"
