#!/usr/bin/env bash
# Informer benchmark: starts the API emulator, bulk-loads pods, and measures the
# informer's initial sync time and RSS and the change -> handler latency.
#   hack/bench/informer.sh [--pods N] [--changes M] [--page P]
# Uses build/bin/kube-informer-bench (built with hack/build.sh release if missing;
# KADET_BUILD_DIR selects another build directory). Timings are noisy on a loaded
# machine: run it on an idle one.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${KADET_BUILD_DIR:-$top/build}
bench=$build/bin/kube-informer-bench
if [ ! -x "$bench" ]; then
  "$top/hack/build.sh" release
fi
state=$(mktemp -d /tmp/kadet-informer-bench.XXXXXX)
emu_pid=
cleanup() {
  if [ -n "$emu_pid" ]; then
    kill "$emu_pid" 2>/dev/null || true
    wait "$emu_pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT
python3 "$top/tests/emulator/kube_emulator.py" --state-dir "$state" \
  >"$state/emulator.log" 2>&1 &
emu_pid=$!
for _ in $(seq 1 300); do
  [ -f "$state/ready" ] && break
  if ! kill -0 "$emu_pid" 2>/dev/null; then
    echo "informer.sh: emulator exited; log:" >&2
    cat "$state/emulator.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -f "$state/ready" ] || { echo "informer.sh: emulator not ready" >&2; exit 1; }
echo "command: hack/bench/informer.sh $*"
"$bench" --kubeconfig "$state/kubeconfig" "$@"
