#!/usr/bin/env bash
# Installs the system packages and tools the test suite needs. Idempotent:
# every step checks first and does nothing when the tool is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm_ci installs web/node_modules for the dashboard SPA when it is missing or
# package-lock.json changed since the last install.
npm_ci() {
  command -v npm >/dev/null 2>&1 || { echo "npm not found: skipping web/ dependencies (the committed dashboard build is used)"; return 0; }
  local sum stamp=web/node_modules/.weft-lock-sha256
  sum=$(sha256sum web/package-lock.json | cut -d' ' -f1)
  if [ -d web/node_modules ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then return 0; fi
  (cd web && npm ci --no-audit --no-fund)
  echo "$sum" > "$stamp"
}
if [ "${WEFT_DEPS:-}" = web ]; then npm_ci; exit 0; fi
# HAProxy is the baseline of `make bench-proxy` (test/bench).
if [ "${WEFT_DEPS:-}" = bench ]; then
  command -v haproxy >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq haproxy; }
  exit 0
fi

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v iptables-restore >/dev/null 2>&1 || need_apt+=(iptables)
# Headless Chromium drives the dashboard's browser test.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
# tinyproxy is the real HTTP forward proxy behind DestinationRule tunnel tests (pkg/proxy).
command -v tinyproxy >/dev/null 2>&1 || need_apt+=(tinyproxy)
# Prometheus (Debian 2.42) runs the dashboards' PromQL in test/e2e (weft demo --prometheus-run).
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# Node builds the dashboard SPA (web/); the image usually ships it.
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
go mod download
# etcd (Debian etcd-server) and a kube-apiserver built from the Go modules into
# .cache/bin, for the Kubernetes integration tests (test/kube). Both idempotent.
hack/kube-apiserver.sh .cache/bin
# helm, for the chart tests (pkg/install).
hack/helm.sh .cache/bin
npm_ci
