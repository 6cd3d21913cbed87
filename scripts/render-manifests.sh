#!/usr/bin/env bash
# Renders manifests/ as one multi-document YAML stream on stdout, in kustomization.yaml's order, without
# needing kustomize: `kubectl apply -k manifests` gives the same objects, minus what the options add.
#
#   --ca-bundle FILE  write FILE (PEM) as the caBundle of every webhook
#   --certs DIR       also emit the `entourage-tls` Secret from DIR/{tls.crt,tls.key,ca.crt} (as written by
#                     `entourage certs --out DIR`), and use DIR/ca.crt as the caBundle
#   --image IMAGE     use IMAGE for the Deployment and for injected adapter/ambassador containers
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/manifests/base"
ca_bundle="" certs="" image=""
default_image="ghcr.io/entourage-dev/entourage:0.1.0"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ca-bundle) ca_bundle="${2:?--ca-bundle needs a file}"; shift 2 ;;
    --certs) certs="${2:?--certs needs a directory}"; shift 2 ;;
    --image) image="${2:?--image needs an image}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "render-manifests: unknown argument $1" >&2; usage ;;
  esac
done

b64() { base64 < "$1" | tr -d '\n'; }
need() { [ -r "$1" ] || { echo "render-manifests: cannot read $1" >&2; exit 1; }; }

if [ -n "$certs" ]; then
  for f in tls.crt tls.key ca.crt; do need "$certs/$f"; done
  [ -n "$ca_bundle" ] || ca_bundle="$certs/ca.crt"
fi
[ -z "$ca_bundle" ] || need "$ca_bundle"
bundle=""
[ -z "$ca_bundle" ] || bundle="$(b64 "$ca_bundle")"

# The `resources:` list of kustomization.yaml: lines `  - file.yaml` after `resources:`.
resources=$(awk '/^resources:/ {on=1; next} /^[^ #-]/ {on=0} on && $1 == "-" {print $2}' "$dir/kustomization.yaml")
[ -n "$resources" ] || { echo "render-manifests: no resources in $dir/kustomization.yaml" >&2; exit 1; }

# Called in this shell (not in a pipeline) so that `first` sticks.
first=1
separator() {
  if [ $first -eq 0 ]; then echo "---"; fi
  first=0
}

for file in $resources; do
  need "$dir/$file"
  separator
  # Drop leading document markers; fill the caBundle placeholder comment; swap the image when asked.
  sed -e '1{/^---$/d;}' "$dir/$file" |
    if [ -n "$bundle" ]; then
      sed -e "s|^\( *\)# caBundle:.*$|\1caBundle: $bundle|"
    else
      cat
    fi |
    if [ -n "$image" ]; then sed -e "s|$default_image|$image|g"; else cat; fi
  if [ "$file" = namespace.yaml ] && [ -n "$certs" ]; then
    separator
    cat <<SECRET
# The serving certificate (and its CA, for --patch-ca-bundle), from $certs.
apiVersion: v1
kind: Secret
metadata:
  name: entourage-tls
  namespace: entourage-system
  labels:
    app.kubernetes.io/name: entourage
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$certs/tls.crt")
  tls.key: $(b64 "$certs/tls.key")
  ca.crt: $(b64 "$certs/ca.crt")
SECRET
  fi
done
