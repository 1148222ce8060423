#!/usr/bin/env bash
# `kadet run` as a user meets it: help and version exit 0; a bad manifest, a bad option,
# --agents > 1 in process, or agent counts outside the manifest's agents range with the
# launcher, or a dataset directory without its files, exit 2 with a message naming the
# problem and train nothing; corrupt dataset files end the launcher's run with the
# workers' error; a short real run prints per-epoch lines and a summary and writes the
# summary JSON.
set -euo pipefail
kadet="${KADET_BIN_DIR:?}/kadet"
src="${KADET_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # name, expected status, expected text (grep -F) in stdout+stderr, command...
  local name=$1 want=$2 text=$3
  shift 3
  local got=0
  "$@" >"$tmp/out" 2>&1 || got=$?
  if [ "$got" != "$want" ] || ! grep -qF -- "$text" "$tmp/out"; then
    echo "FAIL $name: status $got (want $want), output:"; sed 's/^/  | /' "$tmp/out"
    echo "  (expected text: $text)"
    fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}

sample="$src/manifests/samples/fashion-mnist.yaml"
# This test is about the single-agent trainer; once `kadet run` is the multi-process
# launcher, that trainer is `kadet run --in-process`.
run=(run)
if "$kadet" run --help 2>&1 | grep -q -- --in-process; then
  run=(run --in-process)
fi
sed 's/batchSize: 64/batchSize: "abc"/' "$sample" >"$tmp/bad.yaml"
sed 's/^  agents: {min: 1, max: 4}/  agents: {min: 1, max: 4}\n  agentz: 3/' "$sample" >"$tmp/warn.yaml"
printf 'a: [1, 2\n' >"$tmp/broken.yaml"

check help 0 "usage: kadet run" "$kadet" "${run[@]}" --help
check top-help 0 "commands:" "$kadet" --help
check version 0 "kadet 0." "$kadet" version
check unknown-command 2 "unknown command" "$kadet" frobnicate
check no-file 2 "missing manifest FILE" "$kadet" "${run[@]}"
check bad-option 2 "unknown option" "$kadet" "${run[@]}" --bogus "$sample"
check bad-epochs 2 "--epochs: expected an integer in 1..100000, got \"zero\"" "$kadet" "${run[@]}" --epochs zero "$sample"
if [ "${run[*]}" = "run --in-process" ]; then
  check agents 2 "the in-process trainer runs only 1 agent" "$kadet" "${run[@]}" --agents 2 "$sample"
fi
check bad-value 2 'spec.training.batchSize: expected a positive integer, got "abc"' \
  "$kadet" "${run[@]}" "$tmp/bad.yaml"
check bad-yaml 2 "broken.yaml" "$kadet" "${run[@]}" "$tmp/broken.yaml"
check missing-file 2 "nope.yaml" "$kadet" "${run[@]}" "$tmp/nope.yaml"
check missing-data 2 "dataset /nonexistent/data: no train split" "$kadet" "${run[@]}" \
  --data /nonexistent/data "$sample"
if grep -q "\] epoch" "$tmp/out"; then echo "FAIL missing-data trained"; fails=$((fails + 1)); fi

# A misspelt field under spec is refused, with the nearest name (kubectl's strict
# decoding); --allow-unknown-fields trains anyway, with the warning.
sed 's/^  training:/  trainig:/' "$sample" >"$tmp/typo.yaml"
check typo 2 'spec.trainig: unknown field (did you mean "training"?)' \
  "$kadet" "${run[@]}" "$tmp/typo.yaml"
grep -qF -- "--allow-unknown-fields" "$tmp/out" ||
  { echo "FAIL typo: no hint at --allow-unknown-fields"; fails=$((fails + 1)); }
check short-run 0 "done: job default/fashion-mnist" "$kadet" "${run[@]}" --epochs 1 \
  --max-samples 4000 --summary-json "$tmp/sum.json" --allow-unknown-fields "$tmp/warn.yaml"
if ! grep -qF "warning:" "$tmp/out" || ! grep -qF "spec.agentz: unknown field" "$tmp/out"; then
  echo "FAIL no unknown-field warning"; fails=$((fails + 1))
fi
grep -qE "^\[ *[0-9.]+s\] epoch  1/1  agents 1  batch 64  lr [0-9.]+  loss [0-9.]+  test_acc 0\.[0-9]{4}  samples/s [0-9]+$" "$tmp/out" ||
  { echo "FAIL no epoch line"; fails=$((fails + 1)); }
for key in test_accuracy train_loss epochs agents samples_per_second wall_seconds; do
  grep -q "\"$key\"" "$tmp/sum.json" || { echo "FAIL summary lacks $key"; fails=$((fails + 1)); }
done
grep -q '"epochs": 1' "$tmp/sum.json" || { echo "FAIL summary epochs"; fails=$((fails + 1)); }

# The multi-process launcher: the same user errors, and workers that cannot start (here a
# missing dataset) end the run with their error instead of being respawned for ever.
if [ "${run[*]}" = "run --in-process" ]; then
  check launcher-bad-value 2 'spec.training.batchSize: expected a positive integer, got "abc"' \
    "$kadet" run "$tmp/bad.yaml"
  # Agent counts outside the manifest's agents.min..max (1..4 in the sample) are refused
  # with the range named, before any process starts.
  sed 's/^  agents: {min: 1, max: 4}/  agents: {min: 2, max: 3}/' "$sample" >"$tmp/range.yaml"
  refused() { # name, expected text, kadet run arguments...
    local name=$1 text=$2
    shift 2
    check "$name" 2 "$text" "$kadet" run "$@"
    if grep -q "starting .* agent" "$tmp/out"; then
      echo "FAIL $name started processes"; fails=$((fails + 1))
    fi
  }
  refused agents-above-range "--agents 5 is outside the job's agent range 1..4" \
    --agents 5 "$sample"
  refused agents-below-range "--agents 1 is outside the job's agent range 2..3" \
    --agents 1 "$tmp/range.yaml"
  refused schedule-above-range "every count must be inside the job's agent range 1..4" \
    --agents-schedule "0:1,5:6" "$sample"
  refused schedule-below-range "every count must be inside the job's agent range 2..3" \
    --agents-schedule "0:2,5:1" "$tmp/range.yaml"
  refused agents-and-schedule "give one of them" --agents 2 --agents-schedule "0:1,5:2" "$sample"
  refused launcher-typo 'spec.trainig: unknown field (did you mean "training"?)' "$tmp/typo.yaml"
  # A dataset directory without the files is refused up front, naming what is missing.
  refused launcher-missing-data \
    "dataset /nonexistent/data: no train split (looked for /nonexistent/data/train-images-idx3-ubyte.gz) (from --data)" \
    --data /nonexistent/data "$sample"
  # Files that are there but unreadable only show when the workers load them: the run
  # ends with their error instead of respawning them.
  mkdir "$tmp/corrupt"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
           t10k-labels-idx1-ubyte; do
    printf 'not an idx file' >"$tmp/corrupt/$f"
  done
  started=$(date +%s)
  check launcher-corrupt-data 1 "$tmp/corrupt/train-images-idx3-ubyte" \
    timeout 60 "$kadet" run --data "$tmp/corrupt" "$sample"
  grep -qF "failed without training a step" "$tmp/out" ||
    { echo "FAIL launcher gave no reason"; fails=$((fails + 1)); }
  [ $(($(date +%s) - started)) -lt 30 ] ||
    { echo "FAIL launcher took too long to give up"; fails=$((fails + 1)); }
  # A checkpoint directory that cannot be created (its parent is a file): the job still
  # trains and succeeds, kadet run warns, and the summary records that there is none.
  touch "$tmp/afile"
  check launcher-checkpoint-unwritable 0 "warning: the job has no checkpoint in $tmp/afile/ckpt" \
    timeout 120 "$kadet" run --agents 2 --epochs 2 --max-samples 6000 \
    --checkpoint-dir "$tmp/afile/ckpt" --summary-json "$tmp/ck.json" "$sample"
  grep -qF "Not a directory" "$tmp/out" ||
    { echo "FAIL checkpoint warning without the reason"; fails=$((fails + 1)); }
  python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["checkpoint"]
assert c["saved"] is False and c["failing"] is True and "mkdir" in c["error"], c' \
    "$tmp/ck.json" || { echo "FAIL summary checkpoint record"; fails=$((fails + 1)); }
  # A writable one: saved, nothing to warn about.
  check launcher-checkpoint-written 0 "done: job default/fashion-mnist" \
    timeout 120 "$kadet" run --agents 2 --epochs 1 --max-samples 6000 \
    --checkpoint-dir "$tmp/ckpt" --summary-json "$tmp/ck.json" "$sample"
  if grep -i "warning" "$tmp/out" | grep -qi "checkpoint"; then
    echo "FAIL checkpoint warning on a writable directory"; fails=$((fails + 1))
  fi
  python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["checkpoint"]
assert c["saved"] is True and c["failing"] is False and c["step"] > 0, c' \
    "$tmp/ck.json" || { echo "FAIL summary checkpoint record (written)"; fails=$((fails + 1)); }
  # By default the terminal shows progress and the summary; the processes' logs go to
  # the file named in the first line (and their errors above were copied from it).
  check launcher-quiet 0 "done: job default/fashion-mnist" \
    "$kadet" run --agents 2 --epochs 2 --max-samples 3000 "$sample"
  log=$(sed -n '1s/^kadet run: logs of the coordinator and workers in \([^ ]*\) .*/\1/p' \
    "$tmp/out")
  { [ -n "$log" ] && grep -q "info  worker started" "$log"; } ||
    { echo "FAIL first line names no log file with the workers' logs"; fails=$((fails + 1)); }
  [ -n "$log" ] && rm -f "$log"
  ! grep -qE " (info |warn ) (coordinator|worker) " "$tmp/out" ||
    { echo "FAIL component logs on the terminal"; fails=$((fails + 1)); }
  # (a "(running)" line may come between them when an epoch takes more than 10 s)
  [ "$(grep -cE "^\[ *[0-9.]+s\] epoch  [12]/2  agents 2  batch 64  lr .*samples/s [0-9]+$" \
      "$tmp/out")" = 2 ] ||
    { echo "FAIL not one line per epoch"; sed 's/^/  | /' "$tmp/out"; fails=$((fails + 1)); }
  tail -n 1 "$tmp/out" | grep -q "^done: " ||
    { echo "FAIL the summary is not the last line"; fails=$((fails + 1)); }
  check launcher-log-level 0 "info  worker started" \
    "$kadet" run --agents 1 --epochs 1 --max-samples 2000 --log-level info "$sample"
  ! grep -q "logs of the coordinator and workers in" "$tmp/out" ||
    { echo "FAIL --log-level info still names a log file"; fails=$((fails + 1)); }
  # --plot: a PNG and an SVG of the run, where gnuplot is installed; a file type it
  # cannot draw is refused before training.
  check plot-type 2 "--plot $tmp/p.pdf: the file must end in .png or .svg" \
    "$kadet" run --plot "$tmp/p.pdf" "$sample"
  if command -v gnuplot >/dev/null 2>&1; then
    check plot-png 0 "plot: $tmp/p.png" "$kadet" run --agents-schedule "0:1,1:2" --epochs 3 \
      --max-samples 3000 --plot "$tmp/p.png" "$sample"
    [ "$(head -c 4 "$tmp/p.png" | od -An -tx1 | tr -d ' \n')" = 89504e47 ] ||
      { echo "FAIL plot-png: not a PNG"; fails=$((fails + 1)); }
    check plot-svg 0 "plot: $tmp/p.svg" "$kadet" run --agents 1 --epochs 2 \
      --max-samples 2000 --plot "$tmp/p.svg" "$sample"
    grep -q "<svg" "$tmp/p.svg" && grep -q "test accuracy" "$tmp/p.svg" ||
      { echo "FAIL plot-svg: no SVG with the accuracy panel"; fails=$((fails + 1)); }
    # The in-process trainer draws the same picture from its own epochs.
    rm -f "$tmp/p1.png"
    check plot-in-process 0 "plot: $tmp/p1.png" "$kadet" run --in-process --epochs 2 \
      --max-samples 2000 --plot "$tmp/p1.png" "$sample"
    [ "$(head -c 4 "$tmp/p1.png" | od -An -tx1 | tr -d ' \n')" = 89504e47 ] ||
      { echo "FAIL plot-in-process: not a PNG"; fails=$((fails + 1)); }
  fi
  check plot-in-process-type 2 "--plot $tmp/p.pdf: the file must end in .png or .svg" \
    "$kadet" run --in-process --plot "$tmp/p.pdf" "$sample"
  # Ctrl-C: the processes stop and the status is 130, as a shell reports SIGINT.
  "$kadet" run --agents 1 --epochs 50 "$sample" >"$tmp/int.out" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q "starting 1 agent" "$tmp/int.out" && break
    sleep 0.1
  done
  sleep 1
  kill -INT "$pid"
  got=0
  wait "$pid" || got=$?
  [ "$got" = 130 ] || { echo "FAIL Ctrl-C exit status $got (want 130)"; fails=$((fails + 1)); }
  rm -f "$(sed -n '1s/^kadet run: logs of the coordinator and workers in \([^ ]*\) .*/\1/p' \
    "$tmp/int.out")"
fi

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
