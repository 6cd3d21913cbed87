#!/usr/bin/env bash
# probe-webhook.sh KUBECONFIG: succeeds once the apiserver calls entourage through its Service and applies its patch
# (a server-side dry run of an annotated Pod comes back with entourage.dev/status).
set -euo pipefail
. "$(dirname "$0")/env.sh"
"$ROOT/target/tools/bin/kubectl" --kubeconfig "$1" -n default create --dry-run=server -o jsonpath='{.metadata.annotations.entourage\.dev/status}' -f - <<'POD' | grep -q .
apiVersion: v1
kind: Pod
metadata:
  name: entourage-probe
  annotations:
    entourage.dev/sidecar-logs: /var/log/app/app.log
spec:
  containers:
    - name: app
      image: docker.io/library/nginx:1.22
POD
