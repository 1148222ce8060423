#!/bin/sh
# Allreduce bandwidth: kadet's ZeroMQ ring allreduce (runtime/comm.c; over TCP loopback,
# and over ipc:// as `kadet run` uses for local workers) versus torch.distributed gloo, 1 MiB and 16 MiB float32 among 2 and 4 local processes, in GB/s
# of algorithm bandwidth (bytes / time), next to the machine's memcpy bandwidth.
#   hack/bench/allreduce.sh [build-dir]     (default build; needs allreduce_bench built)
# Medians of ITERS (default 20) timed runs after warm-up; on a shared 2-core machine the
# figures move a lot between runs: run it on a quiet machine for stable numbers.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
bench=$build/bin/allreduce_bench
iters=${ITERS:-20}
export OPENBLAS_NUM_THREADS=1
if [ ! -x "$bench" ]; then
    echo "allreduce.sh: $bench not found (cmake --build $build --target allreduce_bench)" >&2
    exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for procs in 2 4; do
    "$bench" --procs "$procs" --iters "$iters" --mib 1 --mib 16 >>"$out"
    KADET_BENCH_IPC=1 "$bench" --procs "$procs" --iters "$iters" --mib 1 --mib 16 |
        grep -v '^memcpy' >>"$out"
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
        /usr/bin/python3 "$here/allreduce_gloo.py" "$procs" "$iters" 1 16 >>"$out"
    fi
done
awk '
/^memcpy/ { split($2, b, "="); split($3, g, "="); mem[b[2]] = g[2] }
/^(kadet|kadet-ipc|gloo)/ {
    split($2, p, "="); split($3, b, "="); split($5, g, "=");
    key = p[2] " " b[2]; val[$1, key] = g[2]; keys[key] = 1
}
END {
    print "| size | processes | kadet tcp GB/s | kadet ipc GB/s | gloo GB/s | kadet tcp/gloo | memcpy GB/s |"
    print "|---:|---:|---:|---:|---:|---:|---:|"
    n = split("2 1048576,2 16777216,4 1048576,4 16777216", order, ",")
    for (i = 1; i <= n; i++) {
        k = order[i]; split(k, kk, " ")
        if (!(k in keys)) continue
        kv = val["kadet", k]; iv = val["kadet-ipc", k]; gv = val["gloo", k]
        r = (gv > 0) ? sprintf("%.2fx", kv / gv) : "-"
        printf "| %d MiB | %s | %s | %s | %s | %s | %s |\n", kk[2] / 1048576, kk[1], kv,
               iv, (gv == "" ? "-" : gv), r, mem[kk[2]]
    }
}' "$out"
