#!/usr/bin/env bash
# A local Kubernetes stand-in: the kadet API emulator plus the fake kubelet, in the
# background, for hacking on the operator without a cluster.
#
#   hack/emulator.sh up [--nodes N] [--cpu C] [--memory M] [--run-pods]
#                       [--path-prefix DIR] [--kubeconfig FILE] [--state-dir DIR]
#                       [--port P]
#   hack/emulator.sh status [--state-dir DIR]
#   hack/emulator.sh down   [--state-dir DIR]
#
# `up` prints the kubeconfig path: export KUBECONFIG=<it>, then kubectl works.
# The state directory (default ${TMPDIR:-/tmp}/kadet-emulator-$UID) holds the
# certificates, the kubeconfig, logs (emulator.log, kubelet.log), pid files and the
# fake kubelet's pod logs and hosts files.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
emu_dir="$top/tests/emulator"
python=${PYTHON:-python3}
state_dir="${TMPDIR:-/tmp}/kadet-emulator-$(id -u)"
nodes=2
cpu=4
memory=8Gi
run_pods=0
kubeconfig_out=""
path_prefix=""
port=0

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

alive() {
  local f=$1
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

wait_file() {
  local file=$1 pidfile=$2 what=$3 i
  for i in $(seq 1 200); do
    [ -f "$file" ] && return 0
    if ! alive "$pidfile"; then
      echo "emulator.sh: $what exited; see $state_dir/${what}.log" >&2
      tail -n 20 "$state_dir/${what}.log" >&2 || true
      return 1
    fi
    sleep 0.1
    : "$i"
  done
  echo "emulator.sh: $what not ready after 20 s; see $state_dir/${what}.log" >&2
  return 1
}

stop_pid() {
  local pidfile=$1 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
      : "$i"
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
case "$cmd" in -h|--help|help) usage 0 ;; esac
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
    --cpu) cpu=${2:?--cpu needs a value}; shift 2 ;;
    --memory) memory=${2:?--memory needs a value}; shift 2 ;;
    --run-pods) run_pods=1; shift ;;
    --kubeconfig) kubeconfig_out=${2:?--kubeconfig needs a file}; shift 2 ;;
    --state-dir) state_dir=${2:?--state-dir needs a directory}; shift 2 ;;
    --path-prefix) path_prefix=${2:?--path-prefix needs a directory}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "emulator.sh: unknown option $1" >&2; usage ;;
  esac
done

case "$cmd" in
  up)
    if alive "$state_dir/emulator.pid"; then
      echo "emulator.sh: already running (state $state_dir); run 'hack/emulator.sh down' first" >&2
      exit 1
    fi
    mkdir -p "$state_dir"
    rm -f "$state_dir/ready" "$state_dir/kubelet.ready"
    nohup "$python" "$emu_dir/kube_emulator.py" --state-dir "$state_dir" --port "$port" \
      >"$state_dir/emulator.log" 2>&1 &
    echo $! >"$state_dir/emulator.pid"
    wait_file "$state_dir/ready" "$state_dir/emulator.pid" emulator
    if [ -z "$path_prefix" ] && [ -d "$top/build/bin" ]; then
      path_prefix="$top/build/bin"
    fi
    kargs=(--kubeconfig "$state_dir/kubeconfig" --nodes "$nodes" --cpu "$cpu"
           --memory "$memory" --work-dir "$state_dir/kubelet"
           --ready-file "$state_dir/kubelet.ready")
    [ "$run_pods" = 1 ] && kargs+=(--run-pods)
    [ -n "$path_prefix" ] && kargs+=(--path-prefix "$path_prefix")
    nohup "$python" "$emu_dir/fake_kubelet.py" "${kargs[@]}" \
      >"$state_dir/kubelet.log" 2>&1 &
    echo $! >"$state_dir/kubelet.pid"
    wait_file "$state_dir/kubelet.ready" "$state_dir/kubelet.pid" kubelet
    kubeconfig="$state_dir/kubeconfig"
    if [ -n "$kubeconfig_out" ]; then
      cp "$state_dir/kubeconfig" "$kubeconfig_out"
      chmod 600 "$kubeconfig_out"
      kubeconfig=$kubeconfig_out
    fi
    echo "emulator.sh: API $(cat "$state_dir/ready"), $nodes fake nodes (cpu $cpu," \
      "memory $memory), run-pods=$run_pods" >&2
    echo "$kubeconfig"
    ;;
  status)
    if alive "$state_dir/emulator.pid"; then
      echo "emulator: running (pid $(cat "$state_dir/emulator.pid"))" \
        "at $(cat "$state_dir/ready" 2>/dev/null || echo '?')"
    else
      echo "emulator: stopped"
    fi
    if alive "$state_dir/kubelet.pid"; then
      echo "fake kubelet: running (pid $(cat "$state_dir/kubelet.pid"))"
    else
      echo "fake kubelet: stopped"
    fi
    echo "kubeconfig: $state_dir/kubeconfig"
    alive "$state_dir/emulator.pid"
    ;;
  down)
    stop_pid "$state_dir/kubelet.pid"
    stop_pid "$state_dir/emulator.pid"
    echo "emulator.sh: stopped (state kept in $state_dir)" >&2
    ;;
  *)
    usage
    ;;
esac
