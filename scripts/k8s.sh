#!/usr/bin/env bash
# A local one-node Kubernetes cluster, for the end-to-end tests of k8s/.
#
#   scripts/k8s.sh up        # build what is missing (scripts/k8s-build.sh), start, wait for node + DNS
#   scripts/k8s.sh down      # stop it and leave the machine as it was found
#   scripts/k8s.sh status    # "up" / "down", exit 0 / 1
#   scripts/k8s.sh env       # prints `export KUBECONFIG=... PATH=...` for eval
#   scripts/k8s.sh exec CMD  # runs CMD inside the cluster's network namespace
#
# Everything runs as root inside a network namespace of its own
# ($K8S_NETNS, default psk8s): there the node's address $K8S_NODE_IP (default
# 192.0.2.2) sits on a bridge psk8s0, pods get addresses of 198.18.0.0/24 on
# the CNI bridge psk8scni0, Services 198.19.0.0/24. None of these exist outside
# the namespace: the host's own interfaces, routes and iptables are never
# touched, and cluster traffic never leaves the machine. kubectl, the tests
# and a Kafka broker for the pods run inside it too (`exec`); the broker
# listens on the node address, which the pods reach.
#
# Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd (runc, cgroupfs), kubelet, kube-proxy (iptables), and CoreDNS as
# a node process answering at the node address (the kubelet's clusterDNS).
# The cluster is new on every `up`; `down` kills what `up` started by PID
# (and the pods' processes by cgroup), unmounts what was mounted under its
# state dirs, removes the kubepods cgroups, deletes the namespace (with its
# links and iptables chains), restores the sysctls the kubelet changes
# (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops) and removes the
# log dirs it created. Both are idempotent; a failure is one line on stderr.
#
# Environment: K8S_CACHE (build cache, default ~/.cache/protosessions-k8s),
# K8S_STATE (default /var/lib/psk8s), K8S_RUN (default /run/psk8s),
# K8S_NETNS (psk8s), K8S_NODE_IP (192.0.2.2).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_CACHE="${K8S_CACHE:-$HOME/.cache/protosessions-k8s}"
K8S_STATE="${K8S_STATE:-/var/lib/psk8s}"
K8S_RUN="${K8S_RUN:-/run/psk8s}"
K8S_NETNS="${K8S_NETNS:-psk8s}"
NODE_IP="${K8S_NODE_IP:-192.0.2.2}"
NODE_NAME=psk8s
POD_CIDR=198.18.0.0/24
SERVICE_CIDR=198.19.0.0/24
BIN="$K8S_CACHE/bin"
PKI="$K8S_STATE/pki"
LOGS="$K8S_STATE/logs"
KUBECONFIG_FILE="$K8S_STATE/admin.kubeconfig"
CTR_SOCK="$K8S_RUN/containerd/containerd.sock"
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns)
UP_TIMEOUT="${K8S_UP_TIMEOUT:-180}"

say() { echo "k8s.sh: $*" >&2; }
die() { echo "k8s.sh: $*" >&2; exit 1; }
in_ns() { nsenter --net="/run/netns/$K8S_NETNS" -- "$@"; }

pid_of() {  # the PID of component $1 if alive and still that program
  local f="$K8S_RUN/$1.pid" pid
  [[ -f $f ]] || return 1
  pid="$(cat "$f")"
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
  echo "$pid"
}

start() {  # start component $1 (binary and args follow) inside the namespace, in the background
  local name="$1"; shift
  setsid nsenter --net="/run/netns/$K8S_NETNS" -- "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$K8S_RUN/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS CMD...: retry CMD until it succeeds
  local what="$1" secs="$2" t0=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    local c
    for c in "${COMPONENTS[@]}"; do
      if [[ -f "$K8S_RUN/$c.pid" ]] && ! pid_of "$c" >/dev/null; then
        fail "$c exited while waiting for $what: $(tail -n 1 "$LOGS/$c.log" 2>/dev/null | cut -c1-300)"
      fi
    done
    (( SECONDS - t0 < secs )) || fail "$what not ready after ${secs}s (logs: $LOGS)"
    sleep 1
  done
}

fail() { say "up failed: $*"; down_quiet; exit 1; }

pki() {
  mkdir -p "$PKI"; cd "$PKI"
  local o=(-nodes -sha256 -days 30)
  openssl req -x509 -newkey rsa:2048 "${o[@]}" -keyout ca.key -out ca.crt -subj "/CN=psk8s-ca"
  openssl genrsa -out sa.key 2048; openssl rsa -in sa.key -pubout -out sa.pub
  cat >apiserver.ext <<EOF
subjectAltName=IP:$NODE_IP,IP:198.19.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 -extfile apiserver.ext -out apiserver.crt
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=psk8s-admin"
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 -extfile client.ext -out admin.crt
  cd - >/dev/null
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: psk8s
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$PKI/admin.crt", client-key: "$PKI/admin.key"}
contexts:
- name: psk8s
  context: {cluster: psk8s, user: admin}
current-context: psk8s
EOF
}

configs() {
  mkdir -p "$K8S_STATE/cni/net.d" "$K8S_STATE/cni/ipam" "$K8S_RUN/containerd"
  cat >"$K8S_STATE/cni/net.d/10-psk8s.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "psk8s", "plugins": [
  {"type": "bridge", "bridge": "psk8scni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$K8S_STATE/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
  cat >"$K8S_STATE/containerd.toml" <<EOF
version = 2
root = "$K8S_STATE/containerd"
state = "$K8S_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$K8S_RUN/containerd/containerd.sock.ttrpc"
[debug]
  address = "$K8S_RUN/containerd/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "psk8s.local/pause:3.10"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$K8S_STATE/cni/net.d"
EOF
  : >"$K8S_STATE/resolv.conf"
  cat >"$K8S_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTR_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: ["$NODE_IP"]
resolvConf: "$K8S_STATE/resolv.conf"
podLogsDir: "$K8S_STATE/pod-logs"
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 50
registerNode: true
EOF
  cat >"$K8S_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: "$KUBECONFIG_FILE"}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  cat >"$K8S_STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_FILE psk8s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
}
EOF
}

netns() {
  ip netns add "$K8S_NETNS"
  in_ns ip link set lo up
  in_ns ip link add psk8s0 type bridge
  # A veth pair on the bridge gives it a carrier (no dummy links in this kernel).
  in_ns ip link add psk8s0p type veth peer name psk8s0q
  in_ns ip link set psk8s0p master psk8s0
  in_ns ip addr add "$NODE_IP/24" dev psk8s0
  in_ns ip link set psk8s0 up; in_ns ip link set psk8s0p up; in_ns ip link set psk8s0q up
  in_ns ip route add default dev psk8s0   # components want a default route; it leads nowhere
  in_ns sysctl -qw net.ipv4.ip_forward=1
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

kubectl_() { in_ns "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
node_ready() { kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
dns_ready() { in_ns curl -sf -o /dev/null "http://127.0.0.1:8181/ready"; }

up() {
  if status_quiet; then say "already up"; return 0; fi
  [[ $(id -u) -eq 0 ]] || die "up needs root (network namespace, containerd, kubelet)"
  down_quiet
  bash "$SCRIPT_DIR/k8s-build.sh" >/dev/null || die "up failed: the build failed (see above)"
  local t0=$SECONDS
  mkdir -p "$K8S_STATE" "$K8S_RUN" "$LOGS"
  # What the kubelet changes on the host, to restore on down.
  local s; : >"$K8S_RUN/sysctls"
  for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")" >>"$K8S_RUN/sysctls"; done
  for d in /var/log/containers /var/log/pods; do [[ -e $d ]] || echo "$d" >>"$K8S_RUN/created-dirs"; done
  pki >"$LOGS/pki.log" 2>&1 || fail "certificates: $(tail -n 1 "$LOGS/pki.log")"
  configs
  netns >"$LOGS/netns.log" 2>&1 || fail "network namespace $K8S_NETNS: $(tail -n 1 "$LOGS/netns.log")"

  start etcd /usr/bin/etcd --name psk8s --data-dir "$K8S_STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster psk8s=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  start containerd /usr/bin/containerd --config "$K8S_STATE/containerd.toml"
  wait_for etcd 30 in_ns curl -sf http://127.0.0.1:2379/health
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
    --authorization-mode Node,RBAC --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --profiling=false \
    --kubelet-preferred-address-types InternalIP
  wait_for kube-apiserver 90 kubectl_ get --raw /readyz
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --leader-elect=false --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=false --bind-address 127.0.0.1 --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" --leader-elect=false \
    --bind-address 127.0.0.1 --profiling=false
  wait_for containerd 30 in_ns /usr/bin/ctr -a "$CTR_SOCK" version
  python3 "$SCRIPT_DIR/k8s_image.py" binary --name psk8s.local/pause:3.10 --binary "$BIN/pause" \
      --out "$K8S_RUN/pause.tar" >"$LOGS/pause-image.log" 2>&1 \
    && /usr/bin/ctr -a "$CTR_SOCK" -n k8s.io images import "$K8S_RUN/pause.tar" >>"$LOGS/pause-image.log" 2>&1 \
    || fail "pause image: $(tail -n 1 "$LOGS/pause-image.log")"
  rm -f "$K8S_RUN/pause.tar"
  start kubelet "$BIN/kubelet" --config "$K8S_STATE/kubelet.yaml" --kubeconfig "$KUBECONFIG_FILE" \
    --root-dir "$K8S_STATE/kubelet" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME"
  start kube-proxy "$BIN/kube-proxy" --config "$K8S_STATE/kube-proxy.yaml"
  start coredns "$BIN/coredns" -conf "$K8S_STATE/Corefile"
  wait_for "node $NODE_NAME" 120 node_ready
  wait_for "cluster DNS" 60 dns_ready
  wait_for "default service account" 60 kubectl_ -n default get serviceaccount default
  say "up in $((SECONDS - t0))s: node $NODE_NAME Ready at $NODE_IP (netns $K8S_NETNS); eval \"\$(scripts/k8s.sh env)\""
}

status_quiet() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  node_ready >/dev/null 2>&1
}

kill_pids() {  # SIGTERM, wait up to 10 s, then SIGKILL
  local pids=("$@") i p
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for i in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && return 0
    sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

kubepods_cgroups() { find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods 2>/dev/null; }

down_quiet() {
  local c pid
  # The kubelet first (it would restart containers), then every process in the pods' cgroups.
  pid="$(pid_of kubelet || true)"; [[ -n $pid ]] && kill_pids "$pid"
  local cg procs
  for cg in $(kubepods_cgroups); do
    # (cgroups vanish while this walks them: find's complaint is no failure)
    procs="$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)"
    [[ -n $procs ]] && kill -9 $procs 2>/dev/null || true
  done
  # Shims of our containerd (they leave its process tree): found by our socket in their command line.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" 2>/dev/null || true); do kill -9 "$pid" 2>/dev/null || true; done
  for c in kube-proxy coredns kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
    pid="$(pid_of "$c" || true)"; [[ -n $pid ]] && kill_pids "$pid"
  done
  rm -f "$K8S_RUN"/*.pid
  # Mounts under our dirs (kubelet volumes, containerd rootfs/netns), deepest first.
  local m
  for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($K8S_STATE|$K8S_RUN)(/|$)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for cg in $(kubepods_cgroups); do
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if ip netns list 2>/dev/null | grep -qw "^$K8S_NETNS"; then ip netns delete "$K8S_NETNS" 2>/dev/null || true; fi
  if [[ -f "$K8S_RUN/sysctls" ]]; then
    local kv
    while read -r kv; do sysctl -qw "$kv" 2>/dev/null || true; done <"$K8S_RUN/sysctls"
  fi
  if [[ -f "$K8S_RUN/created-dirs" ]]; then
    local d; while read -r d; do rm -rf "$d"; done <"$K8S_RUN/created-dirs"
  fi
  rm -rf "$K8S_STATE" "$K8S_RUN"
}

down() {
  [[ -d $K8S_RUN || -d $K8S_STATE ]] || ip netns list 2>/dev/null | grep -qw "^$K8S_NETNS" || { say "already down"; return 0; }
  down_quiet
  local left=() cg
  for cg in $(kubepods_cgroups); do left+=("cgroup $cg"); done
  ip netns list 2>/dev/null | grep -qw "^$K8S_NETNS" && left+=("netns $K8S_NETNS")
  grep -qE " ($K8S_STATE|$K8S_RUN)(/| )" /proc/self/mountinfo && left+=("mounts under $K8S_STATE")
  [[ ${#left[@]} -eq 0 ]] || die "down left: ${left[*]}"
  say "down"
}

[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0   # sourced (to debug one step): functions only
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if status_quiet; then echo up; else echo down; exit 1; fi ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE PATH=$BIN:\$PATH K8S_NETNS=$K8S_NETNS K8S_NODE_IP=$NODE_IP" ;;
  exec) shift; [[ $# -gt 0 ]] || die "exec needs a command"; exec nsenter --net="/run/netns/$K8S_NETNS" -- "$@" ;;
  *) die "usage: scripts/k8s.sh up|down|status|env|exec CMD..." ;;
esac
