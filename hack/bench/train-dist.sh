#!/bin/sh
# Distributed training throughput and time to accuracy on the sample job (Fashion-MNIST,
# MLP 784-256-128-10, per-agent batch 64, SGD momentum 0.9, lr 0.05 x agents (ramped up
# from 0.05 over the first 2 epochs) with a cosine decay, one thread per process):
#   kadet run --agents 2   versus   PyTorch DistributedDataParallel (gloo), 2 processes
#   kadet run --agents 2   versus   kadet run --agents 1
#   and kadet run --agents 2 with sync.exchange factors (the default auto sends the first
#   layer's gradient with 2 agents, one message each way; docs/runtime.md), and with
#   adaptive.batchSize true (the coordinator grows the per-agent batch from 64 for
#   goodput; not the fixed batch-64 work of the other rows, so it is left out of the
#   ratios), and with
#   sync.compression bf16 (gradient messages as bfloat16, half the bytes; its own ratio)
#   and the security modes of the agent network (docs/security.md), 2 agents each: the
#   default (kadet2: job keys, CURVE control plane, data plane authenticated), none
#   (kadet2n: KADET_RUN_NO_KEYS=1, nothing authenticated) and curve (kadet2s:
#   spec.security.dataPlane curve, the data plane encrypted); their ratios to none
# Reported, median over the repetitions (the trainers' runs are interleaved so that
# background load hits all of them alike; repetition i trains with seed i, initialisation
# and sample order, so that time to accuracy is the median of different training runs,
# not of one run timed again):
#   samples/s  median of the per-epoch training throughput, epoch 1 excluded
#   t0.88      (-a) training time (from the first step, evaluation included, start-up and data
#              loading excluded) to the first epoch with test accuracy >= 0.88
#   acc        final test accuracy
# -m "mlp cnn" models, interleaved within each repetition: mlp is the sample above, cnn
# manifests/samples/fashion-mnist-cnn.yaml (conv3x3(32) relu maxpool2 conv3x3(64) relu
# maxpool2 dense(128) relu dense(10), same optimizer and schedule; DDP builds the same
# network). The CNN's rows: 2 agents, 1 agent, DDP, bf16 (factors apply to dense first
# layers only, and the adaptive batch row is the MLP's); its time to accuracy is t0.91 (-a).
# -c CORETYPE sets OPENBLAS_CORETYPE for every trainer (e.g. Haswell, SkylakeX; `auto`
# unsets it so that OpenBLAS detects the CPU); by default the environment's value is kept.
# -t "TRAINERS" runs only these (of kadet2 kadet1 ddp2 kadet2f kadet2a kadet2c kadet2n
# kadet2s cnn-kadet2 cnn-kadet1 cnn-ddp2 cnn-kadet2c; e.g. -t "kadet2 kadet2n kadet2s" for
# the security rows alone); by default every trainer of the models -m names.
# -a "MLP_ACC CNN_ACC" the test accuracies whose time is reported (default "0.88 0.91").
# usage: hack/bench/train-dist.sh [-r REPS] [-e EPOCHS] [-b BUILD_DIR] [-o DIR] [-c CORETYPE]
#                                 [-m "mlp cnn"] [-t TRAINERS] [-a "0.88 0.91"]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
reps=3 epochs=10 build="$top/build" out="" coretype="" models="mlp" only="" accs="0.88 0.91"
while getopts "r:e:b:o:c:m:t:a:h" opt; do
    case "$opt" in
        r) reps=$OPTARG ;;
        e) epochs=$OPTARG ;;
        b) build=$OPTARG ;;
        o) out=$OPTARG ;;
        c) coretype=$OPTARG ;;
        m) models=$OPTARG ;;
        t) only=$OPTARG ;;
        a) accs=$OPTARG ;;
        *) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    esac
done
kadet=$build/bin/kadet
if [ ! -x "$kadet" ]; then
    echo "train-dist.sh: $kadet not found (hack/build.sh release)" >&2
    exit 1
fi
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    "$top/hack/deps.sh" --bench # the DDP peer needs Debian's python3-torch
fi
if [ -z "$out" ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
case "$coretype" in
    "") ;;
    auto) unset OPENBLAS_CORETYPE ;;
    *) export OPENBLAS_CORETYPE="$coretype" ;;
esac
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}" >&2
if ! /usr/bin/python3 -c 'import sys; a = sys.argv[1].split()
assert len(a) == 2 and all(0 < float(x) <= 1 for x in a)' "$accs" 2>/dev/null; then
    echo "train-dist.sh: -a wants two accuracies in (0, 1], MLP then CNN: \"$accs\"" >&2
    exit 2
fi
for m in $models; do
    case "$m" in
        mlp|cnn) ;;
        *) echo "train-dist.sh: unknown model $m (mlp or cnn)" >&2; exit 2 ;;
    esac
done
manifest="$top/manifests/samples/fashion-mnist.yaml"
cnn_manifest="$top/manifests/samples/fashion-mnist-cnn.yaml"
# variant FILE SED SETTING: a copy of the sample edited by SED, checked to hold SETTING.
variant() {
    sed "$2" "${4:-$manifest}" >"$1"
    if ! grep -q "$3" "$1"; then
        echo "train-dist.sh: could not set $3 in a copy of $manifest" >&2
        exit 1
    fi
}
fact_manifest="$out/fashion-mnist-factors.yaml"
variant "$fact_manifest" 's/sync: {mode: allreduce}/sync: {mode: allreduce, exchange: factors}/' \
    'exchange: factors'
bf16_manifest="$out/fashion-mnist-bf16.yaml"
variant "$bf16_manifest" 's/sync: {mode: allreduce}/sync: {mode: allreduce, compression: bf16}/' \
    'compression: bf16'
adapt_manifest="$out/fashion-mnist-adaptive.yaml"
variant "$adapt_manifest" \
    's/adaptive: {learningRate: true, batchSize: false}/adaptive: {learningRate: true, batchSize: true}/' \
    'batchSize: true'
curve_manifest="$out/fashion-mnist-curve.yaml"
variant "$curve_manifest" 's/^  checkpoint:/  security: {dataPlane: curve}\n  checkpoint:/' \
    'dataPlane: curve'
cnn_bf16_manifest="$out/fashion-mnist-cnn-bf16.yaml"
variant "$cnn_bf16_manifest" 's/sync: {mode: allreduce}/sync: {mode: allreduce, compression: bf16}/' \
    'compression: bf16' "$cnn_manifest"
# kadet_run MANIFEST AGENTS: trainer $t's repetition $i (seed $i).
kadet_run() {
    "$kadet" run "$1" --agents "$2" --epochs "$epochs" --seed "$i" --quiet --log-level warn \
        --summary-json "$out/$t.$i.json" >"$out/$t.$i.log" 2>&1
}
trainers=""
case " $models " in *" mlp "*) trainers="kadet2 kadet1 ddp2 kadet2f kadet2a kadet2c kadet2n kadet2s" ;; esac
case " $models " in *" cnn "*) trainers="$trainers cnn-kadet2 cnn-kadet1 cnn-ddp2 cnn-kadet2c" ;; esac
[ -z "$only" ] || trainers=$only
i=1
while [ "$i" -le "$reps" ]; do
    for t in $trainers; do
        case "$t" in
            kadet2) kadet_run "$manifest" 2 ;;
            kadet2f) kadet_run "$fact_manifest" 2 ;;
            kadet2a) kadet_run "$adapt_manifest" 2 ;;
            kadet2c) kadet_run "$bf16_manifest" 2 ;;
            kadet1) kadet_run "$manifest" 1 ;;
            kadet2n) KADET_RUN_NO_KEYS=1 kadet_run "$manifest" 2 ;;
            kadet2s) kadet_run "$curve_manifest" 2 ;;
            ddp2) /usr/bin/python3 "$top/hack/bench/train-dist-ddp.py" --procs 2 \
                      --epochs "$epochs" --seed "$i" --summary-json "$out/$t.$i.json" >"$out/$t.$i.log" 2>&1 ;;
            cnn-kadet2) kadet_run "$cnn_manifest" 2 ;;
            cnn-kadet1) kadet_run "$cnn_manifest" 1 ;;
            cnn-kadet2c) kadet_run "$cnn_bf16_manifest" 2 ;;
            cnn-ddp2) /usr/bin/python3 "$top/hack/bench/train-dist-ddp.py" --procs 2 --model cnn \
                      --epochs "$epochs" --seed "$i" --summary-json "$out/$t.$i.json" >"$out/$t.$i.log" 2>&1 ;;
        esac || {
            echo "train-dist.sh: trainer $t (repetition $i) failed; its log:" >&2
            tail -20 "$out/$t.$i.log" >&2
            exit 1
        }
        echo "rep $i $t done" >&2
    done
    i=$((i + 1))
done
/usr/bin/python3 - "$out" "$reps" "$trainers" "$accs" <<'PY'
import json, statistics, sys
out, reps, ran = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
mlp_acc, cnn_acc = (float(a) for a in sys.argv[4].split())

def per_rep(t):
    return [statistics.median([60000 / e["epoch_seconds"] for e in
                               json.load(open(f"{out}/{t}.{i}.json"))["epoch_log"][1:]] or
                              [60000 / json.load(open(f"{out}/{t}.{i}.json"))
                               ["epoch_log"][0]["epoch_seconds"]])
            for i in range(1, reps + 1)]

def stats(t, thr):
    tacc, acc = [], []
    for i in range(1, reps + 1):
        s = json.load(open(f"{out}/{t}.{i}.json"))
        hit = [e["train_seconds"] for e in s["epoch_log"] if e["accuracy"] >= thr]
        tacc.append(hit[0] if hit else float("inf"))
        acc.append(s["test_accuracy"])
    return statistics.median(per_rep(t)), statistics.median(tacc), statistics.median(acc)

def table(order, names, thr):
    order = [t for t in order if t in ran]
    r = {t: stats(t, thr) for t in order}
    print(f"| trainer | samples/s | t{thr} (s) | final acc |")
    print("|---|---:|---:|---:|")
    for t in order:
        s, ta, a = r[t]
        print(f"| {names[t]} | {s:.0f} | {'-' if ta == float('inf') else f'{ta:.1f}'} | {a:.4f} |")
    return r

mlp = ("kadet2", "kadet2f", "kadet1", "ddp2", "kadet2a", "kadet2c", "kadet2n", "kadet2s")
if any(t in ran for t in mlp):
    names = {"kadet2": "kadet, 2 agents (security default: authenticated; exchange auto: "
                       "gradients)",
             "kadet2f": "kadet, 2 agents (exchange factors)", "kadet1": "kadet, 1 agent",
             "ddp2": "PyTorch DDP gloo, 2 processes",
             "kadet2a": "kadet, 2 agents, adaptive batch size (batch 64 -> final %s)",
             "kadet2c": "kadet, 2 agents, bf16 compression (exchange auto: gradients)",
             "kadet2n": "kadet, 2 agents, security none (no keys)",
             "kadet2s": "kadet, 2 agents, data plane curve (encrypted)"}
    if "kadet2a" in ran:
        final_batch = [json.load(open(f"{out}/kadet2a.{i}.json")).get("batch", 0)
                       for i in range(1, reps + 1)]
        names["kadet2a"] %= "/".join(str(b) for b in final_batch)
    print("MLP 784-256-128-10:")
    r = table(mlp, names, mlp_acc)
    print()
    if all(t in r for t in ("kadet2", "kadet1", "ddp2")):
        k2, k1, d2 = r["kadet2"][0], r["kadet1"][0], r["ddp2"][0]
        print(f"kadet 2 agents / DDP 2 processes: {k2 / d2:.2f}x samples/s; "
              f"kadet 2 agents / kadet 1 agent: {k2 / k1:.2f}x samples/s")
        if "kadet2c" in r:
            c2 = r["kadet2c"][0]
            print(f"with bf16 compression: kadet 2 agents / kadet 1 agent: {c2 / k1:.2f}x "
                  f"samples/s; / DDP (float32): {c2 / d2:.2f}x")
    if "kadet2n" in r:
        # Per repetition too: the runs of one repetition are back to back, so a ratio within
        # a repetition is less exposed to the load moving between repetitions.
        n2 = r["kadet2n"][0]
        base = per_rep("kadet2n")
        for t, what in (("kadet2", "default (authenticated)"), ("kadet2s", "curve")):
            if t in r:
                rr = [a / b for a, b in zip(per_rep(t), base)]
                print(f"security {what} / none: {r[t][0] / n2:.3f}x samples/s (medians); per "
                      f"repetition {', '.join(f'{x:.3f}' for x in rr)}")
cnn = ("cnn-kadet2", "cnn-kadet1", "cnn-ddp2", "cnn-kadet2c")
if any(t in ran for t in cnn):
    names = {"cnn-kadet2": "kadet, 2 agents", "cnn-kadet1": "kadet, 1 agent",
             "cnn-ddp2": "PyTorch DDP gloo, 2 processes",
             "cnn-kadet2c": "kadet, 2 agents, bf16 compression"}
    print("\nCNN conv3x3(32) relu maxpool2 conv3x3(64) relu maxpool2 dense(128) relu dense(10):")
    r = table(cnn, names, cnn_acc)
    if all(t in r for t in ("cnn-kadet2", "cnn-kadet1", "cnn-ddp2")):
        k2, k1, d2 = r["cnn-kadet2"][0], r["cnn-kadet1"][0], r["cnn-ddp2"][0]
        print(f"\nCNN: kadet 2 agents / DDP 2 processes: {k2 / d2:.2f}x samples/s; "
              f"kadet 2 agents / kadet 1 agent: {k2 / k1:.2f}x samples/s")
PY
