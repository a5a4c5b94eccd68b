#!/usr/bin/env bash
# Builds the helm CLI from the Go module proxy into OUT_DIR (default
# .cache/bin), for the chart tests in pkg/install (helm lint, and helm
# template compared with weft's own rendering). Idempotent: does nothing
# when OUT_DIR/helm exists. Several minutes on 2 cores the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${1:-.cache/bin}
ver=${HELM_VERSION:-v3.18.6}
mkdir -p "$out_dir"
out=$(cd "$out_dir" && pwd)
if [ -x "$out/helm" ]; then
  exit 0
fi
# Outside this module so helm's dependencies do not touch our go.mod.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && GOBIN="$out" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$ver")
"$out/helm" version --short
