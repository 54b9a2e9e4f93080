//go:build tools

// Package tools pins the kube-apiserver main package in go.mod/go.sum.
// Build: go build -trimpath k8s.io/kubernetes/cmd/kube-apiserver (see e2e/cluster).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
