// Pins the Prometheus Operator release whose ServiceMonitor and PrometheusRule CRDs the
// e2e suite installs, to check the chart's monitoring objects against their real schemas.
// Only its files are used (e2e/cluster monitoring-crds); nothing is built from it.
module sluice.local/e2e/tools/monitoring

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
