#!/usr/bin/env bash
# Builds a real kube-apiserver from the Kubernetes Go modules (only the Go
# module proxy is used) and installs Debian's etcd-server, for the Kubernetes
# integration tests in pkg/kube. Idempotent: does nothing when both exist.
#
# Usage: hack/kube-apiserver.sh [OUT_DIR]   (default .cache/bin; K8S_VERSION env, default v1.31.4)
# Produces OUT_DIR/kube-apiserver. Takes 3+ minutes on 2 cores the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${1:-.cache/bin}
ver=${K8S_VERSION:-v1.31.4}
staging=v0${ver#v1}

if ! command -v etcd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq etcd-server
fi

mkdir -p "$out_dir"
out=$(cd "$out_dir" && pwd)/kube-apiserver
if [ -x "$out" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > main.go <<'GO'
// Command kube-apiserver is the upstream API server, built from its Go module.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
go mod init weft.local/kubeapiserver >/dev/null 2>&1
go mod edit -require "k8s.io/kubernetes@$ver"
# k8s.io/kubernetes requires its staging modules at v0.0.0 (replaced by local
# paths upstream); pin each one to the matching published v0.x release.
gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$gomod" ] || { echo "cannot locate go.mod of k8s.io/kubernetes@$ver" >&2; exit 1; }
mods=$(awk '$1 ~ /^k8s\.io\/[a-z0-9-]+$/ && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u)
[ -n "$mods" ] || { echo "no staging modules found in $gomod" >&2; exit 1; }
for m in $mods; do
  go mod edit -replace "$m=$m@$staging"
done
GOFLAGS=-mod=mod go mod tidy
GOFLAGS=-mod=mod go build -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "built $out ($ver)"
