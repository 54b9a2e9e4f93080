//go:build tools

// Package tools pins the helm command in go.mod/go.sum.
// Build: go build -trimpath helm.sh/helm/v4/cmd/helm (see e2e/cluster).
package tools

import _ "helm.sh/helm/v4/cmd/helm"
