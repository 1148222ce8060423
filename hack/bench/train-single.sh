#!/usr/bin/env bash
# Training throughput and time-to-accuracy of one kadet agent versus PyTorch on the same
# model (-m: the MLP sample 784-256-128-10 and the CNN sample conv3x3(32) relu maxpool2
# conv3x3(64) relu maxpool2 dense(128) relu dense(10), same initialisation scheme), batch 64, SGD momentum 0.9 with lr 0.05 and a cosine decay, the
# same per-epoch sample order (torch_train.py reproduces kadet's permutation) and the same
# cores (taskset). For every core count n, each trainer runs with 1 and with n threads
# (kadet --threads, torch.set_num_threads; OPENBLAS_NUM_THREADS=1 for PyTorch so its GEMMs
# do not oversubscribe the cores) and the better of the two is compared: PyTorch at its
# best. Both run under each OpenBLAS kernel choice (the environment's OPENBLAS_CORETYPE if
# set, and OpenBLAS's own detection), because both trainers' GEMMs are OpenBLAS's.
#
# Reported per configuration, median over the repetitions (runs of the two trainers are
# interleaved so that background load hits both alike):
#   samples/s   steady state: median of the per-epoch training throughput, epoch 1 excluded
#   tA tB       wall time (training + per-epoch evaluation) to the first epoch at that
#               test accuracy (MLP 0.85 and 0.88, CNN 0.88 and 0.91), "-" when never reached
#   acc         final test accuracy;  RSS  peak resident set (/usr/bin/time)
#
# usage: hack/bench/train-single.sh [-r REPS] [-e EPOCHS] [-c "1 2"] [-t "1 n"] [-k KERNELS]
#                                   [-m "mlp cnn"] [-o DIR]
#   -r 3          repetitions (median quoted)
#   -e 10         epochs per run
#   -c "1 2"      core counts
#   -t "1 n"      thread counts to try per trainer (n = the core count). On a machine
#                 busy with other work, 2 threads can be far slower than 1 for both
#                 trainers (PyTorch's OpenMP threads spin), so "-t 1" saves a lot of time.
#   -k "env auto" OpenBLAS kernel choices: env = as the environment says, auto = OpenBLAS
#                 detection (OPENBLAS_CORETYPE unset), or a core type such as Haswell
#   -m "mlp cnn"  models (manifests/samples/fashion-mnist.yaml, fashion-mnist-cnn.yaml)
#   -o DIR        keep logs and results.tsv there (default: a temporary directory)
# Environment: KADET_BIN=path/to/kadet measures that binary instead of building build/.
# Quick check: hack/bench/train-single.sh -r 1 -e 3 -c 1
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
reps=3 epochs=10 cores="1 2" threads_opt="1 n" kernels="env auto" models="mlp cnn" out=""
while getopts "r:e:c:t:k:m:o:h" opt; do
  case "$opt" in
    r) reps=$OPTARG ;;
    e) epochs=$OPTARG ;;
    c) cores=$OPTARG ;;
    t) threads_opt=$OPTARG ;;
    k) kernels=$OPTARG ;;
    m) models=$OPTARG ;;
    o) out=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
py=/usr/bin/python3
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
  "$top/hack/deps.sh" --bench
fi
# KADET_BIN: an already built kadet to measure instead of building build/.
kadet=${KADET_BIN:-}
if [ -z "$kadet" ]; then
  "$top/hack/build.sh" release >/dev/null
  kadet="$top/build/bin/kadet"
fi
# One agent in this process: with the distributed launcher, `kadet run` needs --in-process.
inproc=()
if "$kadet" run --help 2>&1 | grep -q -- --in-process; then
  inproc=(--in-process)
fi
if [ -z "$out" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
ncpu=$(nproc)
done_kernels=""
env_core=${OPENBLAS_CORETYPE:-}

# run MODEL KERNEL CORES THREADS REP TRAINER: one training run, appends a results row.
run() {
  local model=$1 kernel=$2 n=$3 threads=$4 rep=$5 trainer=$6
  local log="$out/$model-$trainer-$kernel-c$n-t$threads-r$rep.log" rss="$out/rss.$$"
  local manifest="$top/manifests/samples/fashion-mnist.yaml"
  [ "$model" = cnn ] && manifest="$top/manifests/samples/fashion-mnist-cnn.yaml"
  local cpus="0-$((n - 1))"
  local -a envs=(env)
  case "$kernel" in
    env) envs+=(OPENBLAS_NUM_THREADS=1) ;;
    auto) envs+=(-u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1) ;;
    *) envs+=(OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE="$kernel") ;;
  esac
  local -a cmd
  if [ "$trainer" = kadet ]; then
    cmd=("$kadet" run "${inproc[@]}" --epochs "$epochs" --threads "$threads" --seed "$rep" "$manifest")
  else
    cmd=("$py" "$top/hack/bench/torch_train.py" --model "$model" --epochs "$epochs"
         --threads "$threads" --seed "$rep")
  fi
  if ! taskset -c "$cpus" /usr/bin/time -f "%M" -o "$rss" "${envs[@]}" "${cmd[@]}" \
      >"$log" 2>&1; then
    echo "train-single: $trainer run failed, log $log:" >&2
    tail -5 "$log" >&2
    exit 1
  fi
  local core
  core=$("${envs[@]}" "$kadet" version | sed -n 's/.*kernels \([A-Za-z0-9]*\).*/\1/p')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$kernel" "$core" "$n" "$trainer" \
    "$threads" "$rep" "$(tail -1 "$rss")" "$log" >>"$results"
}

for kernel in $kernels; do
  if [ "$kernel" = env ] && [ -z "$env_core" ]; then
    kernel=auto # the environment leaves the choice to OpenBLAS
  fi
  case " $done_kernels " in *" $kernel "*) continue ;; esac
  done_kernels="$done_kernels $kernel"
  for n in $cores; do
    if [ "$n" -gt "$ncpu" ]; then
      echo "train-single: skipping $n cores (machine has $ncpu)" >&2
      continue
    fi
    thread_counts=$(for t in $threads_opt; do [ "$t" = n ] && t=$n; echo "$t"; done | sort -un)
    for rep in $(seq 1 "$reps"); do
      for t in $thread_counts; do
        for model in $models; do
          echo "model=$model kernels=$kernel cores=$n threads=$t rep=$rep/$reps" >&2
          run "$model" "$kernel" "$n" "$t" "$rep" kadet
          run "$model" "$kernel" "$n" "$t" "$rep" pytorch
        done
      done
    done
  done
done

"$py" - "$results" "$epochs" "$env_core" <<'EOF'
import re, statistics, sys
from collections import defaultdict

path, epochs, env_core = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# torch_train.py: "epoch e/E ... test_acc A  samples/s S ... time Ts"; kadet run (run_output.c):
# "[   Ts] epoch e/E ... test_acc A  samples/s S".
line_re = re.compile(r"^epoch\s+(\d+)/\d+.*test_acc ([0-9.]+)\s+samples/s (\d+).*time ([0-9.]+)s")
kadet_re = re.compile(r"^\[\s*([0-9.]+)s\]\s+epoch\s+(\d+)/\d+.*test_acc ([0-9.]+)\s+samples/s (\d+)")
THRESHOLDS = {"mlp": (0.85, 0.88), "cnn": (0.88, 0.91)}
NAMES = {"mlp": "MLP 784-256-128-10",
         "cnn": "CNN conv3x3(32) relu maxpool2 conv3x3(64) relu maxpool2 dense(128) relu dense(10)"}

def parse(log, model):
    eps = []
    for line in open(log):
        m = line_re.match(line)
        if m:
            eps.append((int(m[1]), float(m[2]), float(m[3]), float(m[4])))
            continue
        m = kadet_re.match(line)
        if m:
            eps.append((int(m[2]), float(m[3]), float(m[4]), float(m[1])))
    steady = [e[2] for e in eps if e[0] > 1] or [e[2] for e in eps]
    def reach(thr):
        for e in eps:
            if e[1] >= thr:
                return e[3]
        return None
    ta, tb = THRESHOLDS[model]
    return dict(sps=statistics.median(steady), ta=reach(ta), tb=reach(tb), acc=eps[-1][1])

runs = defaultdict(list)
cores_of = {}
for row in open(path):
    model, kernel, core, n, trainer, threads, rep, rss, log = row.rstrip("\n").split("\t")
    r = parse(log, model)
    r["rss"] = int(rss) / 1024.0
    runs[(model, kernel, int(n), trainer, int(threads))].append(r)
    cores_of[kernel] = core

def med(rs, k):
    vals = [r[k] for r in rs]
    if any(v is None for v in vals):
        # a repetition that never reached the threshold: the median is "never" if most did not
        reached = sorted(v for v in vals if v is not None)
        return statistics.median(reached) if len(reached) * 2 > len(vals) else None
    return statistics.median(vals)

def fmt_t(v):
    return "-" if v is None else f"{v:.2f}s"

best = {}  # (model, kernel, n, trainer) -> (threads, summary)
for (model, kernel, n, trainer, threads), rs in runs.items():
    s = {k: med(rs, k) for k in ("sps", "ta", "tb", "acc", "rss")}
    s["reps"] = len(rs)
    key = (model, kernel, n, trainer)
    if key not in best or s["sps"] > best[key][1]["sps"]:
        best[key] = (threads, s)

def ratio(a, b, inverse=False):
    if a is None or b is None:
        return "-"
    return f"{(b / a if inverse else a / b):.2f}x"

for model in [m for m in ("mlp", "cnn") if any(k[0] == m for k in best)]:
    ta, tb = THRESHOLDS[model]
    hdr = (f"{'cores':>5}  {'trainer':<14} {'threads':>7} {'samples/s':>10} {'t' + str(ta):>7} "
           f"{'t' + str(tb):>7} {'acc':>6} {'RSS MiB':>8}")
    print(f"\nkadet vs PyTorch, {NAMES[model]}, batch 64, SGD m=0.9 cosine, {epochs} epochs; "
          "medians; each trainer at its best thread count")
    for kernel in sorted({k[1] for k in best if k[0] == model}):
        label = kernel if kernel != "auto" else "auto (OpenBLAS detection)"
        print(f"\n[{model}] OpenBLAS kernels: {label} -> {cores_of[kernel]}")
        print(hdr)
        for n in sorted({k[2] for k in best if k[0] == model and k[1] == kernel}):
            rows = {t: best.get((model, kernel, n, t)) for t in ("kadet", "pytorch")}
            for t, v in rows.items():
                if v:
                    th, s = v
                    print(f"{n:>5}  {t:<14} {th:>7} {s['sps']:>10.0f} {fmt_t(s['ta']):>7} "
                          f"{fmt_t(s['tb']):>7} {s['acc']:>6.4f} {s['rss']:>8.0f}   "
                          f"({s['reps']} runs)")
            if rows["kadet"] and rows["pytorch"]:
                k, p = rows["kadet"][1], rows["pytorch"][1]
                print(f"{n:>5}  {'kadet/pytorch':<14} {'':>7} {ratio(k['sps'], p['sps']):>10} "
                      f"{ratio(k['ta'], p['ta'], True):>7} {ratio(k['tb'], p['tb'], True):>7}"
                      f" {'':>6} {ratio(k['rss'], p['rss']):>8}")

    print(f"\n[{model}] best vs best over kernel choices (throughput):")
    for n in sorted({k[2] for k in best if k[0] == model}):
        cand = {t: max(((v[1]["sps"], k[1], v[0]) for k, v in best.items()
                        if k[0] == model and k[2] == n and k[3] == t), default=None)
                for t in ("kadet", "pytorch")}
        if cand["kadet"] and cand["pytorch"]:
            (ks, kk, kt), (ps, pk, pt) = cand["kadet"], cand["pytorch"]
            print(f"  {n} core(s): kadet {ks:.0f} samples/s ({kk}, {kt} thread(s)) vs pytorch "
                  f"{ps:.0f} ({pk}, {pt} thread(s)): {ks / ps:.2f}x")
EOF
echo "logs and results: $out (removed on exit unless -o was given)" >&2
