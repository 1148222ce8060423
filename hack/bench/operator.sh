#!/usr/bin/env bash
# kadet-operator benchmark against the Kubernetes API emulator (loopback): apply -> all
# agent pods created (median of several runs, pinned and scheduler-driven), operator RSS
# with 100 AgentJobs and 1,000 worker pods, and reconciles per second at that size.
# Prints a Markdown table.
#
#   hack/bench/operator.sh [--runs N] [--jobs N] [--pods N]
#
# Environment: BUILD (build directory, default build/; kadet-operator is built there if
# missing). Runs under nice; timings on a shared machine are noisy.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build}
case "${1:-}" in
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
esac
if [ ! -x "$build/bin/kadet-operator" ] || [ ! -x "$build/bin/kd-yaml2json" ]; then
  cmake -S "$top" -B "$build" >/dev/null
  cmake --build "$build" --target kadet-operator kd-yaml2json -j2 >/dev/null
fi
export KADET_BIN_DIR="$build/bin" KADET_SOURCE_DIR="$top"
exec nice /usr/bin/env python3 "$top/hack/bench/operator_bench.py" "$@"
