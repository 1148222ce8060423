#!/usr/bin/env bash
# Scheduler benchmark: average JCT of every policy on the Pollux workloads, replayed by
# kadet-sim on 16 nodes x 4 agent slots. rl is trained on workloads 1-4 and evaluated on
# 5-8, and trained on 5-8 and evaluated on 1-4, for each training seed, at each load level
# and batch model, so that every rl figure is for workloads it never saw (mean and spread
# over the seeds). Also prints the time to simulate a 160-job workload under rl and the
# time of one decision for 100 jobs on 100 nodes. Prints Markdown tables.
#
#   hack/bench/scheduler.sh [--episodes N] [--loads "1.0 0.5 1.5 2.0"]
#                           [--seeds "1 2 3"] [--models "goodput fixed"] [--plot FILE]
#
# --plot FILE draws a PNG: average JCT by policy and load (first model), and the agents
# held over time by three jobs of workload 1 at 1.0x under greedy and rl (rl held out:
# trained on 5-8 with the first seed). Needs gnuplot (hack/deps.sh --plot, run here
# when gnuplot is missing).
# --episodes is per training half (4 workloads); default 40 (goodput) as the shipped
# table. rl trains with kadet-sim's default --train-baseline auto (fixed model: a
# difference reward, greedy's jobs in the system minus rl's on the same workload).
# Environment: BUILD (build directory, default build/; kadet-sim and test_sched are
# built there if missing), KADET_POLLUX_DIR (data, default ../shared/data/pollux beside
# the repository). Runs under nice; training halves run two at a time; timings on a
# shared machine are noisy.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build}
data=${KADET_POLLUX_DIR:-$top/../shared/data/pollux}
episodes=40
loads="1.0 0.5 1.5 2.0"
seeds="1 2 3"
models="goodput fixed"
plot=""
while [ $# -gt 0 ]; do
  case "$1" in
    --episodes) episodes=$2; shift 2 ;;
    --loads) loads=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --plot) plot=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
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
base="static tiresias fair greedy pollux"

dir_for() { # load level -> workload directory
  if [ "$1" = 1.0 ]; then echo "$data/workloads"; else echo "$data/workloads-$1"; fi
}
list() { # dir first last -> comma list of workload files
  local d=$1 out="" i
  for i in $(seq "$2" "$3"); do out="$out${out:+,}$d/workload-$i.csv"; done
  echo "$out"
}
run() { # model workload policies [qtable] -> "policy avg" lines
  local q=()
  [ -n "${4:-}" ] && q=(--qtable "$4")
  nice "$sim" --workload "$2" --traces "$data/traces" --batch-model "$1" --policy "$3" \
    "${q[@]}" --quiet | awk 'NR > 1 { print $1, $3 }'
}

echo "## Average JCT (s), kadet-sim, 16 nodes x 4 slots, interval 60 s, restart 30 s"
echo
echo "rl: ${episodes} training episodes per half (Double Q), seeds ${seeds}, always on the"
echo "other half of the load set (held out); rl cell = mean over seeds (min-max)."
echo
summary=$tmp/summary
: >"$summary"
for model in $models; do
  for load in $loads; do
    d=$(dir_for "$load")
    [ -d "$d" ] || { echo "(no $d, load $load skipped)"; continue; }
    t0=$(date +%s)
    for seed in $seeds; do
      for half in a b; do
        if [ $half = a ]; then wl=$(list "$d" 1 4); else wl=$(list "$d" 5 8); fi
        nice "$sim" --traces "$data/traces" --batch-model "$model" --train "$episodes" \
          --double-q --seed "$seed" --quiet --train-workloads "$wl" \
          --qtable "$tmp/q-$model-$load-$seed-$half.json" &
      done
      wait
    done
    t1=$(date +%s)
    echo "### ${model} batch model, load ${load}x (training $((t1 - t0)) s for all seeds)"
    echo
    echo "| workload | static | tiresias | fair | greedy | pollux | rl (held out) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for i in 1 2 3 4 5 6 7 8; do
      w=$d/workload-$i.csv
      if [ "$i" -le 4 ]; then half=b; else half=a; fi
      run "$model" "$w" "$(echo "$base" | tr ' ' ,)" >"$tmp/base"
      vals=""
      row="| $i"
      for p in $base; do
        v=$(awk -v p="$p" '$1 == p { print $2 }' "$tmp/base")
        row="$row | $v"
        vals="$vals $v"
      done
      rls=""
      for seed in $seeds; do
        rls="$rls $(run "$model" "$w" rl "$tmp/q-$model-$load-$seed-$half.json" | awk '{ print $2 }')"
      done
      rl=$(echo "$rls" | awk '{ s = 0; lo = 1e18; hi = 0; for (k = 1; k <= NF; k++) { s += $k;
             if ($k < lo) lo = $k; if ($k > hi) hi = $k }
             printf "%.0f (%d-%d)", s / NF, lo, hi }')
      echo "$row | $rl |"
      echo "$model $load $i$vals $(echo "$rls" | awk '{ s = 0; for (k = 1; k <= NF; k++) s += $k; print s / NF }') $rls" >>"$summary"
    done
    awk -v M="$model" -v L="$load" '$1 == M && $2 == L { for (k = 4; k <= 9; k++) s[k] += $k; n++ }
      END { printf "| **mean** | **%.0f** | **%.0f** | **%.0f** | **%.0f** | **%.0f** | **%.0f** |\n",
            s[4]/n, s[5]/n, s[6]/n, s[7]/n, s[8]/n, s[9]/n }' "$summary"
    echo
  done
done

echo "### rl (held out) relative to the baselines: mean over the 8 workloads, and per seed"
echo
echo "| model | load | rl / static | rl / tiresias | rl / fair | rl / greedy | rl / pollux | rl / greedy per seed |"
echo "|---|---|---:|---:|---:|---:|---:|---|"
awk '{ key = $1 " " $2; for (k = 4; k <= NF; k++) s[key, k] += $k; nf[key] = NF
       if (!(key in seen)) { seen[key] = 1; order[++m] = key } }
  END { for (i = 1; i <= m; i++) { key = order[i]; split(key, kv, " ");
          per = ""; for (k = 10; k <= nf[key]; k++) per = per sprintf("%s%.3f", per == "" ? "" : ", ", s[key,k] / s[key,7]);
          printf "| %s | %sx | %.3f | %.3f | %.3f | %.3f | %.3f | %s |\n", kv[1], kv[2],
                 s[key,9]/s[key,4], s[key,9]/s[key,5], s[key,9]/s[key,6], s[key,9]/s[key,7],
                 s[key,9]/s[key,8], per } }' "$summary"
echo

if [ -n "$plot" ]; then
  command -v gnuplot >/dev/null 2>&1 || "$top/hack/deps.sh" --plot
  pm=${models%% *}
  s1=${seeds%% *}
  awk -v M="$pm" '$1 == M { for (k = 4; k <= 9; k++) s[$2, k] += $k; n[$2]++
      if (!($2 in seen)) { seen[$2] = 1; order[++m] = $2 } }
    END { for (i = 1; i <= m; i++) { L = order[i]; printf "%sx", L
            for (k = 4; k <= 9; k++) printf " %.0f", s[L, k] / n[L]; printf "\n" } }' \
    "$summary" >"$tmp/jct.dat"
  w1=$data/workloads/workload-1.csv
  qfile=$tmp/q-$pm-1.0-$s1-b.json
  jobs=$(awk -F, 'NR > 1 && !($3 in seen) && ($3 == "imagenet" || $3 == "deepspeech2" ||
                   $3 == "cifar10") { seen[$3] = 1; print $1 }' "$w1")
  [ -n "$jobs" ] || jobs=$(awk -F, 'NR > 1 && NR <= 4 { print $1 }' "$w1")
  curves=""
  for pol in greedy rl; do
    for j in $jobs; do
      qa=()
      [ "$pol" = rl ] && [ -f "$qfile" ] && qa=(--qtable "$qfile")
      nice "$sim" --workload "$w1" --traces "$data/traces" --batch-model "$pm" \
        --policy "$pol" "${qa[@]}" --trace-job "$j" --quiet 2>"$tmp/tr" >/dev/null || true
      sed -n 's/^t=\([0-9.]*\) cur=[0-9]* -> \([0-9]*\).*/\1 \2/p' "$tmp/tr" |
        awk '{ printf "%.3f %s\n", $1 / 3600, $2 }' >"$tmp/agents-$pol-$j.dat"
      dash=1
      [ "$pol" = rl ] && dash=2
      curves="$curves${curves:+, }'$tmp/agents-$pol-$j.dat' using 1:2 with steps dt $dash title '$j $pol'"
    done
  done
  gnuplot <<GP
set terminal pngcairo size 1100,900 noenhanced
set output '$plot'
set multiplot layout 2,1
set title 'Average JCT by policy and load ($pm batch model; rl held out, mean of seeds)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'average JCT (s)'
set yrange [0:*]
set key top left
plot for [c=2:7] '$tmp/jct.dat' using c:xtic(1) title word('static tiresias fair greedy pollux rl', c-1)
unset style
set style data lines
set title 'Agents held over time, workload 1 at 1.0x: greedy (solid) and rl (dashed)'
set xlabel 'hours'
set ylabel 'agents'
set yrange [0:*]
set key top right
plot $curves
unset multiplot
GP
  echo "plot written to $plot"
  echo
fi

echo "### Speed"
echo
w1=$data/workloads/workload-1.csv
best=""
for _ in 1 2 3; do
  t=$(nice "$sim" --workload "$w1" --traces "$data/traces" --policy rl --quiet \
        | awk '$1 == "rl" { print $9 }')
  best=$(awk -v a="${best:-1e9}" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
done
echo "- 160-job workload-1 under rl (shipped table, fixed model), best of 3: ${best} s"
"$build/bin/test_sched" 2>/dev/null | awk '/decision time/ { sub(/^.*decision time /, ""); print "- decision " $0 }'
