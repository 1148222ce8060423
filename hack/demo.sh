#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the sample AgentJob on
# Fashion-MNIST locally with `kadet run`, printing progress and a final summary.
# Arguments go to `kadet run` (for example --agents 2 or --epochs 3).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/hack/deps.sh"
"$top/hack/build.sh" release >/dev/null
exec "$top/build/bin/kadet" run "$top/manifests/samples/fashion-mnist.yaml" "$@"
