//go:build tools

// Package tools pins the etcd server main package in go.mod/go.sum.
// Build: go build -trimpath go.etcd.io/etcd/server/v3 (see e2e/cluster).
package tools

import _ "go.etcd.io/etcd/server/v3"
