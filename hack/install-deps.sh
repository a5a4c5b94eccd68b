#!/usr/bin/env bash
# Installs the system packages and tools the test suite needs. Idempotent:
# every step checks first and does nothing when the tool is already there.
set -euo pipefail
need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v iptables-restore >/dev/null 2>&1 || need_apt+=(iptables)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
go mod download
