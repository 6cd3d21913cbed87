//go:build tools

// Package cluster builds the official commands of one Kubernetes release and of etcd, unchanged: this file only
// keeps their packages in go.mod so that `go build k8s.io/kubernetes/cmd/...` resolves from this module.
package cluster

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
