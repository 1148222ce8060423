#!/usr/bin/env bash
# Builds the two container images from runtime/Dockerfile and operator/Dockerfile, with
# Docker when it is installed and otherwise with buildah (daemonless; as root, with vfs
# storage and chroot isolation, so it also works inside a VM or container without a
# container engine), then checks that they work.
#
#   hack/images.sh [--tag TAG] [--no-check] [--mirror URL]
#
#   --tag TAG     tag of kadet-runtime and kadet-operator (default dev)
#   --no-check    build only
#   --mirror URL  Debian mirror from which buildah's base image debian:bookworm-slim is
#                 bootstrapped (debootstrap --variant=minbase) when its storage has none
#                 and no registry is reachable; default: the first bookworm mirror of
#                 this machine's apt sources
#
# The checks: the runtime image trains the sample AgentJob for one epoch with two agents,
# as its unprivileged user, on the dataset the image carries; the operator image prints
# its help and holds the default Q-table. With buildah the images stay in its storage
# (`buildah --storage-driver vfs images`); `buildah push IMAGE docker-archive:FILE`
# exports one, e.g. for `kind load image-archive FILE`.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

tag=dev
check=1
mirror=""
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --no-check) check=0; shift ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

engine=docker
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  engine=buildah
  if [ "$(id -u)" != 0 ]; then
    echo "images.sh: no usable Docker, and buildah's chroot isolation needs root" >&2
    exit 2
  fi
  "$top/hack/deps.sh" --images
fi
bah=(buildah --storage-driver vfs)
echo "images.sh: building with $engine"

# The first mirror serving bookworm itself in the apt sources (deb822 or one-line form).
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") s = 1}
         /^$/ {if (u != "" && s) {print u; exit} u = ""; s = 0}
         END {if (u != "" && s) print u}' "$f" | head -n 1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1 == "deb" {for (i = 2; i < NF; i++) if ($i !~ /^\[/ && $(i + 1) == "bookworm") {print $i; exit}}' "$f"
  done
}

# buildah: debian:bookworm-slim from a registry if one answers, else from debootstrap.
base_image() {
  local base=docker.io/library/debian:bookworm-slim
  if "${bah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    return 0
  fi
  if "${bah[@]}" pull -q "$base" >/dev/null 2>&1; then
    return 0
  fi
  if [ -z "$mirror" ]; then
    mirror=$(apt_mirror | head -n 1)
  fi
  if [ -z "$mirror" ]; then
    echo "images.sh: no registry and no bookworm mirror in the apt sources: pass --mirror URL" >&2
    exit 1
  fi
  echo "images.sh: bootstrapping $base from $mirror"
  local root ctr
  root=$(mktemp -d)
  if ! debootstrap --variant=minbase bookworm "$root/rootfs" "$mirror" >"$root/log" 2>&1; then
    tail -n 5 "$root/log" >&2
    rm -rf "$root"
    echo "images.sh: debootstrap from $mirror failed" >&2
    exit 1
  fi
  ctr=$("${bah[@]}" from scratch)
  "${bah[@]}" copy "$ctr" "$root/rootfs" / >/dev/null
  rm -rf "$root"
  "${bah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash "$ctr"
  "${bah[@]}" commit -q --rm "$ctr" "$base" >/dev/null
}

build() { # IMAGE DOCKERFILE
  echo "images.sh: $1:$tag from $2"
  if [ "$engine" = docker ]; then
    docker build -q -f "$top/$2" -t "$1:$tag" "$top" >/dev/null
  else
    "${bah[@]}" bud -q --isolation chroot --pull-never -f "$top/$2" -t "$1:$tag" "$top" \
      >/dev/null
  fi
}

run_in() { # IMAGE COMMAND... (as the image's user)
  local image=$1
  shift
  if [ "$engine" = docker ]; then
    docker run --rm --entrypoint "$1" "$image" "${@:2}"
  else
    local ctr rc=0
    ctr=$("${bah[@]}" from --pull-never "$image")
    "${bah[@]}" run --isolation chroot --user 65532:65532 "$ctr" -- "$@" || rc=$?
    "${bah[@]}" rm "$ctr" >/dev/null
    return "$rc"
  fi
}

if [ "$engine" = buildah ]; then
  base_image
fi
build kadet-runtime runtime/Dockerfile
build kadet-operator operator/Dockerfile
if [ "$check" = 0 ]; then
  exit 0
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The sample manifest travels in the command line: the image holds no manifests. The
# single quotes are meant: $1 expands in the container's shell.
manifest=$(cat "$top/manifests/samples/fashion-mnist.yaml")
# shellcheck disable=SC2016
if ! run_in "kadet-runtime:$tag" sh -c 'printf "%s\n" "$1" >/tmp/job.yaml &&
       exec /usr/local/bin/kadet run /tmp/job.yaml --agents 2 --epochs 1 --quiet \
         --checkpoint-dir /tmp/checkpoints' sh "$manifest" >"$out" 2>&1; then
  tail -n 20 "$out" >&2
  echo "images.sh: kadet-runtime:$tag could not train the sample" >&2
  exit 1
fi
done_line=$(grep '^done: ' "$out" || true)
acc=$(printf '%s\n' "$done_line" | sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p')
if [ -z "$acc" ] || ! awk -v a="$acc" 'BEGIN {exit !(a >= 0.80)}'; then
  tail -n 20 "$out" >&2
  echo "images.sh: kadet-runtime:$tag trained to test accuracy '${acc:-none}' (< 0.80)" >&2
  exit 1
fi
echo "images.sh: kadet-runtime:$tag trains: $done_line"
if ! run_in "kadet-operator:$tag" /usr/local/bin/kadet-operator --help >"$out" 2>&1 ||
   ! grep -q 'AgentJobs' "$out"; then
  cat "$out" >&2
  echo "images.sh: kadet-operator:$tag does not start" >&2
  exit 1
fi
if ! run_in "kadet-operator:$tag" test -s /usr/share/kadet/qtable-default.json; then
  echo "images.sh: kadet-operator:$tag lacks /usr/share/kadet/qtable-default.json" >&2
  exit 1
fi
echo "images.sh: kadet-operator:$tag starts and holds the default Q-table"
