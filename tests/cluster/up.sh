#!/usr/bin/env bash
# `make cluster`: a single-node Kubernetes on this machine, as root, with entourage installed by its own chart.
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy from one release (build.sh),
# CoreDNS, Debian's containerd 1.6, runc and CNI plugins, images built locally (images.py). A second run finds the
# running cluster and stops there; the remains of a killed run are cleaned up first (down.sh).
set -euo pipefail
. "$(dirname "$0")/env.sh"
[[ $(id -u) == 0 ]] || { echo "make cluster runs as root (it starts containerd and the kubelet)" >&2; exit 1; }
KUBECTL="$ROOT/target/tools/bin/kubectl"
HELM="$ROOT/target/tools/bin/helm"
ENTOURAGE_BIN="${ENTOURAGE_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/entourage}"

say() { printf '[cluster] %s\n' "$*" >&2; }
alive() { [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" "$@"; }
# wait_for WHAT SECONDS COMMAND...: polls COMMAND each half second; on timeout shows the component's log.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      say "timed out after ${secs}s waiting for $what"
      [[ -f "$LOGS/$what.log" ]] && tail -n 30 "$LOGS/$what.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}
# start NAME BINARY ARGS...: a daemon in its own session, its pid in $PIDS and its output in $LOGS.
start() {
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

components=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns)
running=1
for c in "${components[@]}"; do alive "$c" || running=0; done
if ((running)) && [[ -f "$KUBECONFIG_OUT" ]] && k get --raw /readyz >/dev/null 2>&1; then
  say "the cluster is already running"
  echo "export KUBECONFIG=$KUBECONFIG_OUT"
  exit 0
fi
if [[ -d "$STATE" || -d "$RUN" ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
  say "cleaning up what an earlier run left behind"
  "$CLUSTER_DIR/down.sh"
fi

"$CLUSTER_DIR/build.sh"
[[ -x "$ENTOURAGE_BIN" ]] || { echo "no release binary at $ENTOURAGE_BIN (make cluster builds it)" >&2; exit 1; }
mkdir -p "$STATE" "$RUN" "$PKI" "$LOGS" "$PIDS" "$OUT"
# Everything below runs with the cluster's own state; on failure, what was started is stopped again.
trap 'status=$?; if ((status)); then say "failed; logs are in $LOGS"; fi' EXIT

# --- network: the node's own bridge carries the Pod range, the Service range is routed to it, nothing leaves ---
say "network: $BRIDGE $NODE_IP, Pods $POD_CIDR, Services $SERVICE_CIDR"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# The apiserver dials webhook Services at their cluster IP: the route picks the source address before kube-proxy's
# DNAT, so the Service range needs a route of its own (on a machine with no default route too).
ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
# Pods reach the node and each other, never anything past the node.
iptables -w -I FORWARD -s "$POD_CIDR" ! -o "$BRIDGE" -m comment --comment entourage-cluster -j REJECT
iptables -w -I FORWARD -d "$POD_CIDR" ! -i "$BRIDGE" -m comment --comment entourage-cluster -j REJECT

# --- certificates: one CA for everything, a client certificate per component ---
say "certificates"
"$CLUSTER_DIR/pki.sh" "$PKI" "$NODE_IP" "$API_SERVICE_IP" "$NODE_NAME"
kubeconfig() { # kubeconfig FILE CERT_NAME
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: entourage-e2e
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: entourage-e2e
  context: {cluster: entourage-e2e, user: $2}
current-context: entourage-e2e
KC
}
for who in admin controller-manager scheduler kubelet kube-proxy coredns; do kubeconfig "$STATE/$who.kubeconfig" "$who"; done

# --- control plane ---
say "etcd $ETCD_VERSION"
start etcd "$BIN/etcd" --name node --data-dir "$STATE/etcd" --unsafe-no-fsync \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster node=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
wait_for etcd 60 curl -fsS http://127.0.0.1:2381/health

say "kube-apiserver $K8S_VERSION"
start kube-apiserver "$BIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
  --service-cluster-ip-range "$SERVICE_CIDR" --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet.crt" --kubelet-client-key "$PKI/apiserver-kubelet.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
  --kubelet-preferred-address-types InternalIP --profiling=false --cert-dir "$PKI/apiserver"
wait_for kube-apiserver 180 "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz
cp "$STATE/admin.kubeconfig" "$KUBECONFIG_OUT"

say "kube-controller-manager and kube-scheduler"
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials --leader-elect=false --bind-address 127.0.0.1 \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --profiling=false

# --- the node: containerd with the images, CNI, kubelet, kube-proxy, CoreDNS ---
say "containerd $(containerd --version | awk '{print $3}') with runc $(runc --version | awk 'NR==1{print $3}')"
mkdir -p "$STATE/cni/net.d"
sed -e "s#@STATE@#$STATE#g" -e "s#@RUN@#$RUN#g" "$CLUSTER_DIR/config/containerd.toml" > "$STATE/containerd.toml"
sed -e "s#@STATE@#$STATE#g" -e "s#@BRIDGE@#$BRIDGE#g" -e "s#@POD_CIDR@#$POD_CIDR#g" -e "s#@NODE_IP@#$NODE_IP#g" \
  "$CLUSTER_DIR/config/10-bridge.conflist" > "$STATE/cni/net.d/10-bridge.conflist"
start containerd containerd --config "$STATE/containerd.toml"
wait_for containerd 60 "${CTR[@]}" version
say "images"
"$CLUSTER_DIR/pause.sh" "$BIN/pause"
python3 "$CLUSTER_DIR/images.py" "$STATE/images" "$ENTOURAGE_BIN" "$BIN/pause" >/dev/null
for tar in "$STATE"/images/*.tar; do "${CTR[@]}" images import --no-unpack=false "$tar" >/dev/null; done

say "kubelet, kube-proxy and CoreDNS"
printf 'search cluster.local\noptions ndots:5\n' > "$STATE/resolv.conf"
sed -e "s#@STATE@#$STATE#g" -e "s#@PKI@#$PKI#g" -e "s#@NODE_IP@#$NODE_IP#g" -e "s#@SOCK@#$CONTAINERD_SOCK#g" \
  "$CLUSTER_DIR/config/kubelet.yaml" > "$STATE/kubelet.yaml"
start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
  --root-dir "$STATE/kubelet" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME"
sed -e "s#@STATE@#$STATE#g" -e "s#@POD_CIDR@#$POD_CIDR#g" -e "s#@NODE_NAME@#$NODE_NAME#g" \
  "$CLUSTER_DIR/config/kube-proxy.yaml" > "$STATE/kube-proxy.yaml"
start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
k apply -f "$CLUSTER_DIR/config/coredns-rbac.yaml" >/dev/null
sed -e "s#@STATE@#$STATE#g" -e "s#@NODE_IP@#$NODE_IP#g" "$CLUSTER_DIR/config/Corefile" > "$STATE/Corefile"
start coredns "$BIN/coredns" -conf "$STATE/Corefile"
wait_for kubelet 180 k wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
wait_for kube-controller-manager 120 k -n default get serviceaccount default
wait_for coredns 60 curl -fsS http://127.0.0.1:18181/ready

# --- entourage, the way users install it: its chart, the chart's own certificates ---
say "entourage (helm install from charts/entourage)"
"$HELM" --kubeconfig "$KUBECONFIG_OUT" upgrade --install entourage "$ROOT/charts/entourage" \
  --namespace entourage-system --create-namespace -f "$CLUSTER_DIR/values.yaml" --wait --timeout 180s >/dev/null
# The chart's replicas write their CA into the webhook configuration (--patch-ca-bundle); wait until the
# apiserver really reaches them through the Service.
wait_for entourage 120 "$CLUSTER_DIR/probe-webhook.sh" "$KUBECONFIG_OUT"

trap - EXIT
say "ready: Kubernetes $K8S_VERSION, node $NODE_NAME, entourage in entourage-system"
cat <<MSG
export KUBECONFIG=$KUBECONFIG_OUT
Next:
  kubectl get pods -A
  kubectl apply -f docs/examples/nginx-sidecar.yaml && kubectl logs -f nginx -c sidecar-access
  make e2e          # the end-to-end suite on this cluster
  make cluster-down # stop everything and remove the state
MSG
