#!/usr/bin/env bash
# pki.sh DIR NODE_IP API_SERVICE_IP NODE_NAME: the cluster's CA, serving certificates and one client certificate
# per component (its name and groups are what RBAC and the Node authorizer see), plus the service-account key pair.
set -euo pipefail
dir=$1 node_ip=$2 api_ip=$3 node=$4
cd "$dir"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=entourage-e2e-ca -days 365 -out ca.crt \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
# cert NAME SUBJECT EXTENDED_USAGE [SANS]
cert() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    [[ -n ${4:-} ]] && echo "subjectAltName=$4"
  } > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile "$1.ext" \
    -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
cert apiserver /CN=kube-apiserver serverAuth \
  "IP:$node_ip,IP:$api_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert kubelet-serving "/CN=$node" serverAuth "IP:$node_ip,DNS:$node"
cert admin "/O=system:masters/CN=entourage-e2e-admin" clientAuth
cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert controller-manager /CN=system:kube-controller-manager clientAuth
cert scheduler /CN=system:kube-scheduler clientAuth
cert kubelet "/O=system:nodes/CN=system:node:$node" clientAuth
cert kube-proxy /CN=system:kube-proxy clientAuth
cert coredns /CN=system:coredns clientAuth
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
