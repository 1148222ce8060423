#!/usr/bin/env bash
# Configures and builds one flavour of kadet into its own directory.
#   hack/build.sh release   -> build/        (optimised; what demo.sh and benchmarks run)
#   hack/build.sh asan      -> build-asan/   (AddressSanitizer + UndefinedBehaviorSanitizer)
# Extra arguments go to cmake's configure step.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
flavour=${1:-release}
shift || true
case "$flavour" in
  release) dir="$top/build"; opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir="$top/build-asan"; opts=(-DCMAKE_BUILD_TYPE=Debug -DKADET_SANITIZE=ON) ;;
  *) echo "build.sh: unknown flavour $flavour (release or asan)" >&2; exit 2 ;;
esac
if [ "${CI:-}" = true ] || [ "${KADET_WERROR:-0}" = 1 ]; then
  opts+=(-DKADET_WERROR=ON)
fi
cmake -S "$top" -B "$dir" "${opts[@]}" "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
