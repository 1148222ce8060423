#!/bin/sh
# Builds the wire fuzz target with clang's libFuzzer (+ASan/UBSan) and runs it for
# FUZZ_SECONDS (default 20) from the seed corpus. Skips (exit 77) when clang or the
# libFuzzer runtime is missing. Usage: run_fuzz.sh <source dir> <work dir>
set -eu
src=$1
work=$2
seconds=${FUZZ_SECONDS:-20}
cc=
for c in clang clang-14 clang-15 clang-16; do
    if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
done
if [ -z "$cc" ]; then echo "clang not found: skipping"; exit 77; fi
mkdir -p "$work/corpus"
cp "$src"/tests/fuzz/corpus/wire/* "$work/corpus/"
# shellcheck disable=SC2046
if ! "$cc" -g -O1 -fsanitize=fuzzer,address,undefined -D_POSIX_C_SOURCE=200809L \
    -D_DEFAULT_SOURCE -I"$src/common" "$src/tests/fuzz/fuzz_wire.c" \
    "$src/common/kd_wire.c" "$src/common/kd_log.c" "$src/common/kd_metrics.c" \
    "$src/common/kd_error.c" $(pkg-config --cflags --libs jansson) \
    -o "$work/fuzz_wire" 2>"$work/build.log"; then
    cat "$work/build.log"
    echo "libFuzzer build failed: skipping"; exit 77
fi
"$work/fuzz_wire" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    "$work/corpus"
