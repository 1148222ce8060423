#!/usr/bin/env bash
# End-to-end test on a real Kubernetes cluster made with kind (needs Docker, kind, kubectl
# and helm; CI here has no Docker and runs the same scenario against the API emulator).
#
#   hack/e2e-kind.sh [--name NAME] [--keep] [--reuse] [--tag TAG] [--kind-config FILE]
#                    [--timeout SECONDS] [--skip-build]
#
#   --name NAME          kind cluster name (default kadet-e2e; env KADET_E2E_CLUSTER)
#   --keep               leave the cluster (and the job's objects on failure) for debugging
#   --reuse              use an existing cluster of that name instead of failing
#   --tag TAG            image tag of kadet-operator and kadet-runtime (default e2e)
#   --kind-config FILE   kind cluster config (default: 1 control plane + 2 workers)
#   --timeout SECONDS    time allowed for the training job to succeed (default 1800)
#   --skip-build         do not build the images (they must exist locally)
#
# Steps: create the cluster; build both images and `kind load` them; helm install the
# chart with those images; apply manifests/samples/fashion-mnist.yaml; wait for Running
# with at least 2 agents ready and a Scaled event; pin 1 agent with `kubectl scale` and
# see the workers scale down; unpin; wait for Succeeded; delete the job and check that no
# pod or service of it is left. Event reasons and labels: docs/operator.md.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

cluster=${KADET_E2E_CLUSTER:-kadet-e2e}
keep=0
reuse=0
tag=e2e
kind_config=""
job_timeout=1800
build=1
job=fashion-mnist
job_ns=default
release_ns=kadet-system

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --name) cluster=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --reuse) reuse=1; shift ;;
    --tag) tag=$2; shift 2 ;;
    --kind-config) kind_config=$2; shift 2 ;;
    --timeout) job_timeout=$2; shift 2 ;;
    --skip-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "e2e-kind.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$job_timeout" in
  ''|*[!0-9]*) echo "e2e-kind.sh: --timeout needs whole seconds" >&2; exit 2 ;;
esac

PATH="$top/.tools/bin:$PATH"
for tool in docker kind kubectl helm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "e2e-kind.sh: $tool not found in PATH" >&2
    exit 2
  fi
done

ctx="kind-$cluster"
k() { kubectl --context "$ctx" "$@"; }
log() { printf '%s e2e: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "FAILED: $*"; diagnose; exit 1; }

diagnose() {
  log "diagnostics"
  k get agentjobs -A -o wide || true
  k describe agentjob -n "$job_ns" "$job" || true
  k get pods,services -A -l kadet.io/job-name="$job" -o wide || true
  k get events -n "$job_ns" --sort-by=.lastTimestamp | tail -n 30 || true
  k logs -n "$release_ns" deploy/kadet --tail=100 || true
}

tmp=$(mktemp -d)
created=0
cleanup() {
  rm -rf "$tmp"
  if [ "$keep" = 1 ]; then
    log "keeping cluster $cluster (kubectl --context $ctx ...; kind delete cluster --name $cluster)"
  elif [ "$created" = 1 ]; then
    log "deleting cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# wait_for <seconds> <description> <command...>: polls every 2 s until the command succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "timed out after ${limit}s waiting for $what"
    fi
    sleep 2
  done
  log "ok: $what"
}

# ---- cluster --------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  if [ "$reuse" != 1 ]; then
    echo "e2e-kind.sh: cluster $cluster exists (use --reuse, or kind delete cluster --name $cluster)" >&2
    exit 2
  fi
  log "reusing cluster $cluster"
else
  if [ -z "$kind_config" ]; then
    kind_config="$tmp/kind.yaml"
    printf '%s\n' 'kind: Cluster' 'apiVersion: kind.x-k8s.io/v1alpha4' 'nodes:' \
      '- role: control-plane' '- role: worker' '- role: worker' >"$kind_config"
  fi
  log "creating cluster $cluster"
  created=1
  kind create cluster --name "$cluster" --config "$kind_config" --wait 180s
fi

# ---- images ---------------------------------------------------------------------------
operator_image="kadet-operator:$tag"
runtime_image="kadet-runtime:$tag"
if [ "$build" = 1 ]; then
  log "building $operator_image and $runtime_image"
  docker build -f "$top/operator/Dockerfile" -t "$operator_image" "$top"
  docker build -f "$top/runtime/Dockerfile" -t "$runtime_image" "$top"
fi
kind load docker-image --name "$cluster" "$operator_image" "$runtime_image"

# ---- operator -------------------------------------------------------------------------
log "installing the chart"
helm --kube-context "$ctx" upgrade --install kadet "$top/charts/kadet" \
  --namespace "$release_ns" --create-namespace \
  --set operator.image.repository=kadet-operator --set "operator.image.tag=$tag" \
  --set operator.image.pullPolicy=Never \
  --set runtime.image.repository=kadet-runtime --set "runtime.image.tag=$tag" \
  --set runtime.image.pullPolicy=Never \
  --set scheduler.intervalSeconds=5 \
  --wait --timeout 5m
k -n "$release_ns" rollout status deploy/kadet --timeout=120s

# ---- the sample job ---------------------------------------------------------------------
log "applying the sample job"
sed -e "s#image: kadet-runtime:latest#image: $runtime_image#" \
    -e "s#imagePullPolicy: IfNotPresent#imagePullPolicy: Never#" \
    "$top/manifests/samples/fashion-mnist.yaml" >"$tmp/job.yaml"
grep -q "image: $runtime_image" "$tmp/job.yaml" || die "sample manifest has no kadet-runtime:latest image to replace"
k apply -f "$tmp/job.yaml"

field() { k get agentjob -n "$job_ns" "$job" -o "jsonpath=$1" 2>/dev/null; }
running_with_two() {
  [ "$(field '{.status.phase}')" = Running ] && [ "$(field '{.status.agents.ready}')" -ge 2 ] 2>/dev/null
}
event_count() { # event_count <reason>
  k get events -n "$job_ns" --no-headers \
    --field-selector "involvedObject.kind=AgentJob,involvedObject.name=$job,reason=$1" \
    2>/dev/null | wc -l
}
has_event() { [ "$(event_count "$1")" -ge "${2:-1}" ]; }
worker_count() {
  k get pods -n "$job_ns" --no-headers -l "kadet.io/job-name=$job,kadet.io/role=worker" \
    --field-selector=status.phase!=Failed,status.phase!=Succeeded 2>/dev/null | wc -l
}
workers_are() { [ "$(worker_count)" -eq "$1" ] && [ "$(field '{.status.agents.ready}')" = "$1" ]; }

wait_for 600 "phase Running with at least 2 agents ready" running_with_two
wait_for 120 "a Scaled event" has_event Scaled
has_event Created || die "no Created event for the job's pods"
scaled=$(event_count Scaled)

log "pinning 1 agent (kubectl scale)"
k scale agentjob -n "$job_ns" "$job" --replicas=1
wait_for 300 "scale down to 1 worker" workers_are 1
wait_for 60 "a Scaled event for the scale down" has_event Scaled $((scaled + 1))
log "unpinning (the scheduler decides again)"
k patch agentjob -n "$job_ns" "$job" --type=merge -p '{"spec":{"replicas":null}}'

succeeded() {
  local phase
  phase=$(field '{.status.phase}')
  [ "$phase" = Failed ] && die "the job failed"
  [ "$phase" = Succeeded ]
}
wait_for "$job_timeout" "phase Succeeded" succeeded
log "accuracy $(field '{.status.progress.accuracy}') after epoch $(field '{.status.progress.epoch}')"

# ---- deletion ---------------------------------------------------------------------------
log "deleting the job"
k delete agentjob -n "$job_ns" "$job" --wait=true --timeout=120s
nothing_left() {
  [ -z "$(k get pods,services -n "$job_ns" -l "kadet.io/job-name=$job" -o name 2>/dev/null)" ]
}
wait_for 120 "no pod or service of the job left" nothing_left
log "PASSED"
