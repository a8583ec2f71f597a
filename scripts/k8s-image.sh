#!/usr/bin/env bash
# The project's image without a registry or Docker, for the local cluster
# (scripts/k8s.sh): a Debian bookworm minbase root filesystem (its Python is
# 3.11, as the Dockerfile's python:3.11 base), a venv on PATH with the project
# and its pinned dependencies installed as the Dockerfile does (`pip install`
# of the sources, no dev extra, sources dropped), user and group 10001, an
# empty root-owned /app; packed as a one-layer image whose user, command,
# ports, working directory and environment are read from the Dockerfile
# (scripts/k8s_image.py), and imported into the cluster's containerd.
#
#   scripts/k8s-image.sh [NAME:TAG]     # default protosessions:0.1.0
#
# The base root filesystem is cached in $K8S_CACHE (debootstrap, ~2 min once);
# the image is rebuilt only when the project's sources changed (~1 min).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
K8S_CACHE="${K8S_CACHE:-$HOME/.cache/protosessions-k8s}"
K8S_RUN="${K8S_RUN:-/run/psk8s}"
NAME="${1:-protosessions:0.1.0}"
SUITE=bookworm   # Python 3.11: tests/test_k8s_image.py checks it against the Dockerfile's FROM
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE="$K8S_CACHE/rootfs-$SUITE.tar"
VENV=/opt/venv
IMAGE_PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

die() { echo "k8s-image.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot)"
mkdir -p "$K8S_CACHE/build-logs"
LOG="$K8S_CACHE/build-logs/image.log"
: >"$LOG"

base() {  # the debootstrap root filesystem, once
  [[ -f $BASE ]] && return 0
  local dir="$K8S_CACHE/rootfs-$SUITE.tmp"
  rm -rf "$dir"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$dir" "$MIRROR" >>"$LOG" 2>&1 \
    || { tail -n 5 "$LOG" >&2; rm -rf "$dir"; die "debootstrap $SUITE failed (log: $LOG)"; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
  rm -rf "$dir"
}

sources_hash() {
  (cd "$ROOT" && { cat Dockerfile pyproject.toml scripts/k8s-image.sh scripts/k8s_image.py;
     find protosessions flows -name '*.py' -o -name '*.jsonl' | LC_ALL=C sort | xargs cat; }) | sha256sum | cut -c1-16
}

build() {  # the image archive for these sources, once
  local out="$1" dir="$K8S_CACHE/image-root.tmp"
  rm -rf "$dir"; mkdir -p "$dir"
  tar -C "$dir" -xf "$BASE"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  local ca=/etc/ssl/certs/ca-certificates.crt
  [[ -f ${PIP_CERT:-} ]] && ca="$PIP_CERT"
  cp "$ca" "$dir/tmp/host-ca.pem"   # the registries may be reached through a TLS-inspecting proxy
  mkdir -p "$dir/tmp/src"
  cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/protosessions" "$ROOT/flows" "$dir/tmp/src/"
  find "$dir/tmp/src" -name __pycache__ -prune -exec rm -rf {} +
  chroot "$dir" /usr/bin/env -i PATH="$IMAGE_PATH" HOME=/root PIP_CERT=/tmp/host-ca.pem \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 /bin/sh -euc "
      groupadd --system --gid 10001 protosessions
      useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
          --shell /usr/sbin/nologin protosessions
      python3 -m venv $VENV
      pip install -q /tmp/src
      rm -rf /tmp/src /tmp/host-ca.pem
      python -c 'import bytewax.run, confluent_kafka, orjson, prometheus_client, flows.options'
      protosessions --help > /dev/null
      mkdir -p /app && chmod 755 /app
    " >>"$LOG" 2>&1 || { tail -n 5 "$LOG" >&2; rm -rf "$dir"; die "installing the project into the image root failed (log: $LOG)"; }
  : >"$dir/etc/resolv.conf"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  python3 "$SCRIPT_DIR/k8s_image.py" rootfs --dockerfile "$ROOT/Dockerfile" --rootfs "$dir" \
      --name "$NAME" --out "$out" --env "PATH=$IMAGE_PATH" >>"$LOG" 2>&1 \
    || { tail -n 5 "$LOG" >&2; rm -rf "$dir"; die "packing the image failed (log: $LOG)"; }
  rm -rf "$dir"
}

exec 9>"$K8S_CACHE/.image.lock"
flock 9
base
archive="$K8S_CACHE/image-${NAME//[:\/]/_}-$(sources_hash).tar"
if [[ ! -f $archive ]]; then
  rm -f "$K8S_CACHE/image-${NAME//[:\/]/_}-"*.tar
  build "$archive"
fi
if [[ -S $K8S_RUN/containerd/containerd.sock ]]; then
  ctr -a "$K8S_RUN/containerd/containerd.sock" -n k8s.io images import "$archive" >>"$LOG" 2>&1 \
    || { tail -n 3 "$LOG" >&2; die "ctr images import failed (log: $LOG)"; }
  echo "k8s-image.sh: $NAME imported into the local cluster" >&2
else
  echo "k8s-image.sh: $NAME built ($archive); no local cluster to import it into (scripts/k8s.sh up)" >&2
fi
echo "$archive"
