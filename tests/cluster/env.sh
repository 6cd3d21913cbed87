# Paths and addresses shared by up.sh, down.sh and the e2e suite. Sourced, never run.
# Everything the cluster owns lives under $STATE (kubelet, containerd, etcd, certificates, logs) and $RUN (sockets);
# what users need (the kubeconfig) is under target/cluster. All addresses are this node's own: the Pod range is on
# the bridge entourage0 (the node itself is its .1), the Service range is routed to that bridge, and nothing is NATed
# off the machine.
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
. "$CLUSTER_DIR/versions.env"
BIN="${CLUSTER_BIN:-$ROOT/target/cluster/bin}"
OUT="$ROOT/target/cluster"
KUBECONFIG_OUT="$OUT/kubeconfig"
STATE=/var/lib/entourage-cluster
RUN=/run/entourage-cluster
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$RUN/pids"
BRIDGE=entourage0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
NODE_NAME=entourage-node
CONTAINERD_SOCK="$RUN/containerd/containerd.sock"
CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
