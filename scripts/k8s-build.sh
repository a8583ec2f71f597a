#!/usr/bin/env bash
# Builds what a local one-node Kubernetes cluster needs, from the package
# registries alone (no container registry, no release tarball):
#   - Kubernetes v1.34.4 binaries from the Go module proxy (the module has no
#     staging/, so go.mod's replace block is swapped for the published v0.34.4
#     staging modules);
#   - CoreDNS from the Go module proxy (static);
#   - the pause binary from Kubernetes' own pause.c (static);
#   - Debian packages: etcd-server, containerd, runc, CNI plugins, iptables,
#     conntrack, debootstrap (apt-get, only those missing).
# Everything lands in $K8S_CACHE (default ~/.cache/protosessions-k8s) and is
# rebuilt only when missing. Cold: ~9 min on 2 cores; warm: a second.
#
#   scripts/k8s-build.sh          # build what is missing, print the cache dir
#
# Environment: K8S_CACHE, K8S_VERSION (v1.34.4), COREDNS_VERSION (v1.14.7).
set -euo pipefail

K8S_CACHE="${K8S_CACHE:-$HOME/.cache/protosessions-k8s}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
BIN="$K8S_CACHE/bin"
LOGS="$K8S_CACHE/build-logs"
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
DEBS=(etcd-server containerd runc containernetworking-plugins iptables conntrack debootstrap)

log() { echo "k8s-build.sh: $*" >&2; }
die() { echo "k8s-build.sh: $*" >&2; exit 1; }

# Run a step with its output kept in a log file; on failure show its tail.
step() {
  local name="$1"; shift
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    tail -n 25 "$LOGS/$name.log" >&2
    die "$name failed (full log: $LOGS/$name.log)"
  fi
}

debs() {
  local missing=() p
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  # No init system starts services here; policy-rc.d makes sure none is started.
  local prc=/usr/sbin/policy-rc.d had_prc=0
  [[ -e $prc ]] && had_prc=1
  [[ $had_prc -eq 1 ]] || { printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; }
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$LOGS/apt.log" 2>&1 || rc=$?
  [[ $had_prc -eq 1 ]] || rm -f "$prc"
  if [[ $rc -ne 0 ]]; then tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $LOGS/apt.log)"; fi
  # Debian's containerd package may have left a default config or socket dir; we
  # use our own config and state dirs, so nothing else is needed.
}

k8s_src() {
  local dir
  dir="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || return 1
  rm -rf "$K8S_CACHE/src/kubernetes"
  mkdir -p "$K8S_CACHE/src"
  cp -r "$dir" "$K8S_CACHE/src/kubernetes"
  chmod -R u+w "$K8S_CACHE/src/kubernetes"
  local mod="$K8S_CACHE/src/kubernetes/go.mod"
  # Drop the replace block (it points at ./staging, absent from the module) and
  # require each staging module at its published version.
  sed -i -e '/^replace (/,/^)/d' -e '/^replace k8s.io\/.* => \.\/staging/d' "$mod"
  sed -i -E "s#^([[:space:]]*k8s\.io/[A-Za-z0-9._-]+) v0\.0\.0\$#\1 $STAGING_VERSION#" "$mod"
  if grep -qE ' v0\.0\.0( |$)' "$mod"; then grep -nE ' v0\.0\.0( |$)' "$mod"; return 1; fi
}

k8s_bins() {
  local src="$K8S_CACHE/src/kubernetes" b
  [[ -f "$src/go.mod" ]] || step k8s-source k8s_src
  local pkgs=()
  for b in "${K8S_BINS[@]}"; do pkgs+=("./cmd/$b"); done
  mkdir -p "$BIN"
  (cd "$src" && GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 nice -n 19 go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${STAGING_VERSION#v0.}" \
      -o "$BIN/" "${pkgs[@]}")
}

coredns() {
  local dir
  dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/coredns/coredns@$COREDNS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || return 1
  rm -rf "$K8S_CACHE/src/coredns"
  mkdir -p "$K8S_CACHE/src" "$BIN"
  cp -r "$dir" "$K8S_CACHE/src/coredns"
  chmod -R u+w "$K8S_CACHE/src/coredns"
  (cd "$K8S_CACHE/src/coredns" && GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .)
}

pause() {
  local src="$K8S_CACHE/src/kubernetes/build/pause/linux/pause.c"
  [[ -f "$src" ]] || step k8s-source k8s_src
  mkdir -p "$BIN"
  gcc -Os -static -DVERSION="\"3.10-psk8s\"" -o "$BIN/pause" "$src"
  strip "$BIN/pause"
}

main() {
  command -v go >/dev/null || die "go is not installed (needed to build Kubernetes from the Go module proxy)"
  command -v gcc >/dev/null || die "gcc is not installed (needed to build the static pause binary)"
  mkdir -p "$BIN" "$LOGS"
  exec 9>"$K8S_CACHE/.build.lock"
  flock 9
  debs
  local missing=0 b
  for b in "${K8S_BINS[@]}"; do [[ -x "$BIN/$b" ]] || missing=1; done
  if [[ $missing -eq 1 ]]; then
    log "building Kubernetes $K8S_VERSION (cold: ~7 min) ..."
    step k8s-build k8s_bins
  fi
  if [[ ! -x "$BIN/coredns" ]]; then
    log "building CoreDNS $COREDNS_VERSION (cold: ~3 min) ..."
    step coredns-build coredns
  fi
  [[ -x "$BIN/pause" ]] || step pause-build pause
  for b in "${K8S_BINS[@]}" coredns pause; do [[ -x "$BIN/$b" ]] || die "$BIN/$b missing after the build"; done
  echo "$K8S_CACHE"
}

main "$@"
