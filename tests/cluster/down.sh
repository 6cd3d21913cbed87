#!/usr/bin/env bash
# `make cluster-down`: stops every process `make cluster` started (by the pids it wrote), the containers' shims,
# and removes the mounts, network devices, iptables rules, cgroups and state it made. Safe to run twice, and on
# the remains of a run that was killed.
set -uo pipefail
. "$(dirname "$0")/env.sh"
[[ $(id -u) == 0 ]] || { echo "make cluster-down runs as root" >&2; exit 1; }
say() { printf '[cluster] %s\n' "$*" >&2; }

stop() { # stop NAME: SIGTERM, then SIGKILL after 10 s
  local f="$PIDS/$1.pid"
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
}

# The kubelet first, so that it restarts nothing; then every container, while containerd can still remove them.
for c in kubelet coredns kube-proxy kube-scheduler kube-controller-manager; do stop "$c"; done
if [[ -S $CONTAINERD_SOCK ]]; then
  for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1; done
  sleep 1
  for task in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$task" >/dev/null 2>&1; done
  for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1; done
fi
stop containerd
# Shims outlive containerd; theirs name our socket.
pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null
stop kube-apiserver
stop etcd
# kube-proxy removes its own chains.
if [[ -x $BIN/kube-proxy ]] && iptables -w -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
fi
while iptables -w -S FORWARD 2>/dev/null | grep -q 'entourage-cluster'; do
  rule=$(iptables -w -S FORWARD | grep -m1 'entourage-cluster' | sed 's/^-A /-D /')
  eval "iptables -w $rule" || break
done

# Mounts: volumes, rootfs overlays, the sandboxes' shm and network namespaces, deepest first.
for _ in 1 2 3; do
  mapfile -t mounts < <(awk -v s="$STATE" -v r="$RUN" '$2 ~ "^"s || $2 ~ "^"r || $2 ~ "^/run/netns/cni-" {print $2}' /proc/self/mounts | sort -r)
  ((${#mounts[@]})) || break
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
rm -f /run/netns/cni-* 2>/dev/null
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
# The kubelet's cgroup tree (cgroupfs driver): empty once every container is gone.
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -d ${hierarchy}kubepods ]] && find "${hierarchy}kubepods" -depth -type d -exec rmdir {} + 2>/dev/null
done
rm -rf "$STATE" "$RUN" "$KUBECONFIG_OUT"
say "down: nothing of the cluster is left running"
