#!/usr/bin/env bash
# Scheduler benchmark: average JCT of every policy on the Pollux workloads, replayed by
# kadet-sim on 16 nodes x 4 agent slots. rl is trained on workloads 1-4 and evaluated on
# 5-8, and trained on 5-8 and evaluated on 1-4, at each load level (1.0x, 0.5x, 1.5x,
# 2.0x), so that every rl figure is for workloads it never saw. Also prints the time to
# simulate a 160-job workload under rl and the time of one decision for 100 jobs on 100
# nodes. Prints Markdown tables.
#
#   hack/bench/scheduler.sh [--episodes N] [--loads "1.0 0.5 1.5 2.0"] [--seed N]
#
# Environment: BUILD (build directory, default build/; kadet-sim and test_sched are built
# there if missing), KADET_POLLUX_DIR (data, default ../shared/data/pollux beside the
# repository). Runs under nice; timings on a shared machine are noisy.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build}
data=${KADET_POLLUX_DIR:-$top/../shared/data/pollux}
episodes=120
loads="1.0 0.5 1.5 2.0"
seed=1
while [ $# -gt 0 ]; do
  case "$1" in
    --episodes) episodes=$2; shift 2 ;;
    --loads) loads=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "scheduler.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ ! -d "$data/workloads" ]; then
  echo "scheduler.sh: Pollux data not found in $data (set KADET_POLLUX_DIR)" >&2
  exit 2
fi
if [ ! -x "$build/bin/kadet-sim" ] || [ ! -x "$build/bin/test_sched" ]; then
  cmake -S "$top" -B "$build" >/dev/null
  cmake --build "$build" --target kadet-sim test_sched -j "$(nproc)" >/dev/null
fi
sim=$build/bin/kadet-sim
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
policies="static tiresias fair greedy rl"

dir_for() { # load level -> workload directory
  if [ "$1" = 1.0 ]; then echo "$data/workloads"; else echo "$data/workloads-$1"; fi
}
list() { # dir first last -> comma list of workload files
  local d=$1 out="" i
  for i in $(seq "$2" "$3"); do out="$out${out:+,}$d/workload-$i.csv"; done
  echo "$out"
}
avg_jct() { # workload policy [qtable] -> average JCT in seconds
  local q=()
  [ -n "${3:-}" ] && q=(--qtable "$3")
  nice "$sim" --workload "$1" --traces "$data/traces" --policy "$2" "${q[@]}" --quiet \
    | awk -v p="$2" '$1 == p { print $3 }'
}

echo "## Average JCT (s), kadet-sim, 16 nodes x 4 slots, interval 60 s, restart 30 s"
echo
echo "rl trained ${episodes} episodes (seed ${seed}, Double Q) on the other half of each load set."
echo
summary=$tmp/summary
: >"$summary"
for load in $loads; do
  d=$(dir_for "$load")
  [ -d "$d" ] || { echo "(no $d, load $load skipped)"; continue; }
  t0=$(date +%s)
  nice "$sim" --traces "$data/traces" --train "$episodes" --double-q --seed "$seed" --quiet \
    --train-workloads "$(list "$d" 1 4)" --qtable "$tmp/q-$load-a.json"
  nice "$sim" --traces "$data/traces" --train "$episodes" --double-q --seed "$seed" --quiet \
    --train-workloads "$(list "$d" 5 8)" --qtable "$tmp/q-$load-b.json"
  t1=$(date +%s)
  echo "### Load ${load}x (training both halves took $((t1 - t0)) s)"
  echo
  echo "| workload | static | tiresias | fair | greedy | rl (held out) |"
  echo "|---|---|---|---|---|---|"
  for i in 1 2 3 4 5 6 7 8; do
    w=$d/workload-$i.csv
    if [ "$i" -le 4 ]; then qt=$tmp/q-$load-b.json; else qt=$tmp/q-$load-a.json; fi
    row="| $i"
    vals=""
    for p in $policies; do
      if [ "$p" = rl ]; then v=$(avg_jct "$w" rl "$qt"); else v=$(avg_jct "$w" "$p"); fi
      row="$row | $v"
      vals="$vals $v"
    done
    echo "$row |"
    echo "$load $i$vals" >>"$summary"
  done
  awk -v L="$load" '$1 == L { for (k = 3; k <= 7; k++) s[k] += $k; n++ }
    END { printf "| **mean** | **%.0f** | **%.0f** | **%.0f** | **%.0f** | **%.0f** |\n",
          s[3]/n, s[4]/n, s[5]/n, s[6]/n, s[7]/n }' "$summary"
  echo
done

echo "### rl relative to the baselines (mean over the 8 held-out workloads per load)"
echo
echo "| load | rl / static | rl / tiresias | rl / fair | rl / greedy |"
echo "|---|---|---|---|---|"
awk '{ L = $1; for (k = 3; k <= 7; k++) s[L, k] += $k; n[L]++; if (!(L in seen)) { seen[L] = 1; order[++m] = L } }
  END { for (i = 1; i <= m; i++) { L = order[i];
          printf "| %sx | %.2f | %.2f | %.2f | %.2f |\n", L, s[L,7]/s[L,3], s[L,7]/s[L,4],
                 s[L,7]/s[L,5], s[L,7]/s[L,6] } }' "$summary"
echo

echo "### Speed"
echo
w1=$data/workloads/workload-1.csv
best=""
for _ in 1 2 3; do
  t=$(nice "$sim" --workload "$w1" --traces "$data/traces" --policy rl --quiet \
        | awk '$1 == "rl" { print $9 }')
  best=$(awk -v a="${best:-1e9}" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
done
echo "- 160-job workload-1 under rl (shipped table), best of 3: ${best} s"
"$build/bin/test_sched" 2>/dev/null | awk '/decision time/ { sub(/^.*decision time /, ""); print "- decision " $0 }'
