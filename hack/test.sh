#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds the release flavour and the
# ASan+UBSan flavour with warnings as errors, and runs every ctest test in both.
#   hack/test.sh                 everything
#   hack/test.sh -L unit         only tests with that ctest label (passed to ctest)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
"$top/hack/deps.sh" --helm
export KADET_WERROR=1
export PATH="$top/.tools/bin:$PATH"

echo "== build (release)"
"$top/hack/build.sh" release
echo "== build (asan+ubsan)"
"$top/hack/build.sh" asan

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
echo "== tests (release)"
ctest --test-dir "$top/build" --output-on-failure -j 2 "$@" || status=1
# The sanitizer pass runs every test that executes C code; the emulator's and the chart's
# own tests (Python, Helm) are the same in both builds, and "slow" ones take minutes
# under ASan (they ran in the release pass above).
echo "== tests (asan+ubsan)"
ctest --test-dir "$top/build-asan" --output-on-failure -j 2 -LE 'slow|emulator|charts' "$@" || status=1
if [ "$status" != 0 ]; then
  echo "test.sh: FAILED" >&2
fi
exit "$status"
