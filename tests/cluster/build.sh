#!/usr/bin/env bash
# Builds the cluster's binaries once into target/cluster/bin: etcd and the Kubernetes commands from this module
# (official packages, unchanged, version-stamped), CoreDNS from its own module. A stamp file holds what was built;
# a second run with the same versions does nothing. Go's module and build caches (GOMODCACHE, GOCACHE) stay where
# Go keeps them, outside the repository, so that a warm machine stays warm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$here/versions.env"
bin="${CLUSTER_BIN:-$root/target/cluster/bin}"
mkdir -p "$bin"
stamp="$bin/.built"
# The end-to-end tests' gRPC peer (images.py puts it in an image): grpc-go from this module's requirements, a quick
# rebuild from Go's build cache, so it is built on every run rather than under the stamp.
(cd "$here" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$bin/grpc-peer" ./grpcpeer)
want="$K8S_VERSION $ETCD_VERSION $COREDNS_VERSION $(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
rm -f "$stamp"
major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
cd "$here"
echo "building etcd $ETCD_VERSION and Kubernetes $K8S_VERSION (cold: tens of minutes on 2 cores)" >&2
go build -trimpath -ldflags "$ldflags" -o "$bin/" \
  go.etcd.io/etcd/server/v3 \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
mv "$bin/server" "$bin/etcd"  # go names a /v3 module's command after the element before it
echo "building CoreDNS $COREDNS_VERSION" >&2
GOBIN="$bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
echo "$want" > "$stamp"
