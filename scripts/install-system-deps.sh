#!/usr/bin/env bash
# Installs the system packages the project needs beyond the Python venv, from Debian:
# OpenStack Swift (object, container, account and proxy servers), which `crimes stack up` runs as
# a real S3 API when CRIMES_STACK_OBJECT_STORE=swift; docker-compose, whose parser checks
# compose.yaml without a Docker engine; Prometheus (and promtool), which the tests and the demo
# run against the services and which checks the rule files. Idempotent: does nothing when everything is there.
set -euo pipefail

PACKAGES=(swift swift-proxy swift-account swift-container swift-object docker-compose prometheus)
# Overridable only so that tests can exercise the install path without touching the system.
BIN_DIR=${CRIMES_SWIFT_BIN_DIR:-/usr/bin}
SWIFT_CONF=${CRIMES_SWIFT_CONF:-/etc/swift/swift.conf}
BINARIES=(
  "$BIN_DIR/swift-proxy-server" "$BIN_DIR/swift-object-server" "$BIN_DIR/swift-container-server"
  "$BIN_DIR/swift-account-server" "$BIN_DIR/swift-ring-builder"
)
# The compose parser and Prometheus are looked for on the real system only (tests fake the
# Swift binaries).
[[ -n "${CRIMES_SWIFT_BIN_DIR:-}" ]] || BINARIES+=(/usr/bin/docker-compose /usr/bin/prometheus /usr/bin/promtool)

missing=()
for bin in "${BINARIES[@]}"; do
  [[ -x "$bin" ]] || missing+=("$bin")
done
[[ -f "$SWIFT_CONF" ]] || missing+=("$SWIFT_CONF")
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
