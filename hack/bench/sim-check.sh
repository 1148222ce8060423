#!/usr/bin/env bash
# Checks kadet-sim's goodput job model against the Pollux artifact's own simulator: replays
# every workload under the artifact's deterministic Tiresias (two queues split at 16
# agent-hours) with `--batch-model goodput` and prints, per workload, kadet's average JCT
# beside the artifact's (results/tiresias-<load>.json), their ratio, and how many jobs
# finish within 1% and 10% of the artifact's time for that job. Exits 1 when a workload's
# average is off by more than --max-dev percent (default 3), 2 on a usage or data error,
# 77 when the data is missing (ctest's skip code).
#
#   hack/bench/sim-check.sh [--load 1.0] [--max-dev 3] [--policy tiresias]
#
# Environment: BUILD (build directory, default build/), KADET_POLLUX_DIR (data, default
# ../shared/data/pollux beside the repository). Needs python3 to read the JSON.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build}
bin=${KADET_BIN_DIR:-$build/bin}
data=${KADET_POLLUX_DIR:-$top/../shared/data/pollux}
load=1.0
maxdev=3
policy=tiresias
while [ $# -gt 0 ]; do
  case "$1" in
    --load) load=$2; shift 2 ;;
    --max-dev) maxdev=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "sim-check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$load" = 1.0 ]; then wdir=$data/workloads; else wdir=$data/workloads-$load; fi
ref=$data/results/$policy-$load.json
if [ ! -d "$wdir" ] || [ ! -f "$ref" ]; then
  echo "sim-check.sh: $wdir or $ref missing (set KADET_POLLUX_DIR); skipped" >&2
  exit 77
fi
command -v python3 >/dev/null || { echo "sim-check.sh: python3 needed; skipped" >&2; exit 77; }
[ -x "$bin/kadet-sim" ] || { echo "sim-check.sh: $bin/kadet-sim not built" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
extra=()
[ "$policy" = tiresias ] && extra=(--tiresias-thresholds 16)
for i in 1 2 3 4 5 6 7 8; do
  "$bin/kadet-sim" --workload "$wdir/workload-$i.csv" --traces "$data/traces" \
    --policy "$policy" --batch-model goodput "${extra[@]}" --quiet \
    --jobs-csv "$tmp/w$i.csv" >/dev/null
done
python3 - "$ref" "$tmp" "$maxdev" "$policy" "$load" <<'EOF'
import csv, json, sys
ref, tmp, maxdev, policy, load = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
art = json.load(open(ref))
print(f"## kadet-sim --batch-model goodput --policy {policy} against the artifact, load {load}x")
print()
print("| workload | kadet avg JCT (s) | artifact (s) | ratio | jobs within 1% | within 10% |")
print("|---|---:|---:|---:|---:|---:|")
worst, ks, arts = 0.0, [], []
for i in range(1, 9):
    name = f"workload-{i}"
    rows = list(csv.DictReader(open(f"{tmp}/w{i}.csv")))
    ref_jobs = art["jcts"][name]
    kj = [float(r["jct"]) for r in rows]
    if any(j < 0 for j in kj):
        print(f"{name}: unfinished jobs", file=sys.stderr)
        sys.exit(1)
    k = sum(kj) / len(kj)
    a = art["avgs"][name]
    w1 = sum(abs(float(r["jct"]) - ref_jobs[r["name"]]) <= 0.01 * ref_jobs[r["name"]] for r in rows)
    w10 = sum(abs(float(r["jct"]) - ref_jobs[r["name"]]) <= 0.10 * ref_jobs[r["name"]] for r in rows)
    dev = abs(k / a - 1) * 100
    worst = max(worst, dev)
    ks.append(k)
    arts.append(a)
    print(f"| {i} | {k:,.0f} | {a:,.0f} | {k / a:.3f} | {w1}/{len(rows)} | {w10}/{len(rows)} |")
km, am = sum(ks) / 8, sum(arts) / 8
print(f"| **mean** | **{km:,.0f}** | **{am:,.0f}** | **{km / am:.3f}** | | |")
print()
print(f"largest deviation of a workload's average: {worst:.2f}% (limit {maxdev:g}%)")
sys.exit(1 if worst > maxdev else 0)
EOF
