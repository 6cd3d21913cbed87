#!/usr/bin/env bash
# pause.sh OUT: the sandbox's pause binary, compiled from the pause.c of the pinned Kubernetes release (the source
# the official pause image is built from), statically.
set -euo pipefail
. "$(dirname "$0")/env.sh"
out=$1
[[ -x "$out" ]] && exit 0
src=$(cd "$CLUSTER_DIR" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
gcc -Os -static -Wall -Werror -DVERSION="$K8S_VERSION" -o "$out" "$src"
